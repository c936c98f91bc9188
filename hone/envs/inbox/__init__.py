"""The inbox environment: answer a user's question by searching their email inbox with tools.

Its job: synthetic inboxes and questions (`data`, from the fact kinds and wordings in `facts` and
the value pools in `pools`), the strict answer checker (`answers`), the no-learning baselines
(`rules`), worked episodes for a warm start (`demonstrations`), a per-inbox SQLite FTS5 store (`db`), the
agent's tools and their OpenAI schemas (`tools`), the episode reward (`reward`), and the agent
loop over an OpenAI-style client (`agent`). Its border: it knows nothing about training, the
engine or the server — it talks to a model only through `client.chat.completions.create`, and
reads hone's extension fields only through `Trajectory.add_response` and the choice's
`tool_call_error`.
"""

from hone.envs.inbox.agent import EpisodeState, InboxEnv, rollout, take_turn
from hone.envs.inbox.data import Email, Inbox, Persona, Question, Splits, generate_inbox, inbox_of, load_inbox, make_splits
from hone.envs.inbox.db import InboxDB, db_for, inbox_db
from hone.envs.inbox.reward import EpisodeOutcome, EpisodeScore, score_episode
from hone.envs.inbox.tools import TOOL_SCHEMAS, answer, call_tool, read_email, search_inbox

__all__ = [
    "TOOL_SCHEMAS",
    "Email",
    "EpisodeOutcome",
    "EpisodeScore",
    "EpisodeState",
    "Inbox",
    "InboxDB",
    "InboxEnv",
    "Persona",
    "Question",
    "answer",
    "call_tool",
    "db_for",
    "Splits",
    "generate_inbox",
    "inbox_of",
    "inbox_db",
    "load_inbox",
    "make_splits",
    "read_email",
    "rollout",
    "score_episode",
    "search_inbox",
    "take_turn",
]
