"""A LangGraph ReAct agent over LangChain's ChatOpenAI, trained with hone without changing how it is written.

The agent is plain LangGraph code (`build_agent` below imports nothing from hone): a
`MessagesState` graph whose model node calls `ChatOpenAI(...).bind_tools([calculate])` and whose
`ToolNode` runs the tool, looping until the model answers without a call (`tools_condition`). It is
the ReAct loop written out, so the first turn can be made to call the tool (`tool_choice`) and
later turns left free (`create_react_agent` builds the same loop, but is deprecated since LangGraph
1.0 for `langchain.agents.create_agent`, which takes the same ChatOpenAI). hone only hands it a
base URL, an API key and a model name, from `model.capture()`, and records every call ChatOpenAI
makes there token for token. Each turn re-sends the whole conversation; hone *bridges* it onto the
tokens it already sampled, so one episode trains as one sequence: the printed `bridged` count is
every call after an episode's first, `broken` stays 0, and each episode gives one sequence to train.

The reward is plain code: 1.0 when the first number of the agent's final answer is right, 0.1 when
it called the tool with an expression the tool could evaluate.

Measured on the embedded model, 2-core CPU (AMD EPYC), default settings (5 steps x 4 questions x 6
tries, about 3 minutes): correct answers 25% -> 12% -> 25% -> 46% -> 71% of each step's tries. At
every step 0 turns were broken, and each trained group gave one sequence per episode (a group
whose tries all score alike is dropped).

    .venv/bin/python examples/langgraph_agent.py                        # in-process, embedded model
    .venv/bin/python examples/langgraph_agent.py --stream               # the same, ChatOpenAI(streaming=True)
    .venv/bin/python examples/langgraph_agent.py --backend http://127.0.0.1:8000   # on `hone serve`
                                                                        # (key in HONE_API_KEY)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
from typing import Annotated, Any

from langchain_core.messages import BaseMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.errors import GraphRecursionError
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import Field

from hone.backends import LocalBackend, RemoteBackend
from hone.rl.gather import GatherConfig, gather_groups
from hone.rl.model import TrainableModel, TrainConfig
from hone.rl.trajectory import Trajectory

MAX_TURNS = 3  # model calls per episode: the tool call, the answer, one spare
# a small model copies a concrete example far better than it follows a description
INSTRUCTIONS = (
    "Use the calculate tool for arithmetic, then reply with only the number. Example: for "
    '"What is 12 * 3?" call calculate with {"expression": "12 * 3"}; it returns 36; reply 36.'
)


# --------------------------------------------------------------------------- the agent (no hone in here)
def make_questions(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    questions = []
    for _ in range(n):
        a, b = rng.randint(11, 99), rng.randint(11, 99)
        op, value = rng.choice([("+", a + b), ("-", a - b), ("*", a * b)])
        questions.append((f"What is {a} {op} {b}?", value))
    return questions


@tool
def calculate(expression: Annotated[str, Field(max_length=40)]) -> str:
    """Evaluate an arithmetic expression such as 12 * (3 + 4)."""
    if not re.fullmatch(r"[\d\s+\-*/().]{1,40}", expression):  # arithmetic only: anything else is refused, never evaluated
        return "Error: give an arithmetic expression with digits and + - * / ( )."
    try:
        return str(eval(expression, {"__builtins__": {}}, {}))
    except (SyntaxError, ZeroDivisionError, TypeError, ValueError):
        return "Error: that expression does not evaluate."


def build_agent(base_url: str, api_key: str, model: str, seed: int = 0, stream: bool = False, max_tokens: int = 64) -> CompiledStateGraph:
    llm = ChatOpenAI(
        model=model, base_url=base_url, api_key=api_key, max_tokens=max_tokens, temperature=0.7, seed=seed, max_retries=0, streaming=stream
    )
    # the first turn must call the tool (a small model rarely does unprompted); later turns are free to answer
    first = llm.bind_tools([calculate], tool_choice="calculate", parallel_tool_calls=False)
    then = llm.bind_tools([calculate], parallel_tool_calls=False)

    async def think(state: MessagesState) -> dict[str, list[BaseMessage]]:
        called = any(isinstance(m, ToolMessage) for m in state["messages"])
        reply = await (then if called else first).ainvoke([SystemMessage(INSTRUCTIONS), *state["messages"]])
        return {"messages": [reply]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", think)
    graph.add_node("tools", ToolNode([calculate]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)  # a tool call goes to "tools", an answer ends the run
    graph.add_edge("tools", "agent")
    return graph.compile()


async def run_agent(base_url: str, api_key: str, model: str, question: str, seed: int = 0, stream: bool = False) -> dict[str, Any]:
    """One episode of the agent, exactly as it runs anywhere: the graph's final state."""
    agent = build_agent(base_url, api_key, model, seed, stream)
    # each model call and each tool run is a step: MAX_TURNS calls need 2 * MAX_TURNS - 1 of them
    return await agent.ainvoke({"messages": [("user", question)]}, {"recursion_limit": 2 * MAX_TURNS - 1})


def score(state: dict[str, Any] | None, answer: int) -> tuple[float, bool]:
    """(reward, correct): 1.0 for the right number first in the final answer, plus 0.1 when the
    tool got an expression it could evaluate."""
    if state is None:
        return 0.0, False
    numbers = re.findall(r"-?\d+", state["messages"][-1].text)
    correct = bool(numbers) and int(numbers[0]) == answer
    evaluated = any(isinstance(m, ToolMessage) and not m.text.startswith("Error") for m in state["messages"])
    return 1.0 * correct + 0.1 * evaluated, correct


# --------------------------------------------------------------------------- training it with hone
async def attempt(model: TrainableModel, question: str, answer: int, seed: int, stream: bool) -> Trajectory:
    """One captured episode, scored. An agent that is still calling tools after MAX_TURNS calls has
    failed the task: that is a reward of 0 and an episode worth training on (so the model learns
    not to), not an error to drop. Anything else (the server gone, a bug) propagates:
    gather_groups counts it against its failure budget."""
    async with model.capture(task_id=question) as rollout:
        try:
            state = await run_agent(rollout.base_url, rollout.api_key, rollout.model, question, seed, stream)
        except GraphRecursionError:
            state = None
        rollout.reward, correct = score(state, answer)
        rollout.metrics["correct"] = float(correct)
    return rollout.trajectory


async def main(args: argparse.Namespace) -> None:
    backend = RemoteBackend.from_env(args.backend) if args.backend else LocalBackend()
    model = TrainableModel("langgraph-agent", base_model=args.model, backend=backend, lora_rank=16)
    questions = make_questions(args.steps * args.questions, seed=0)

    for step in range(args.steps):
        batch = questions[step * args.questions : (step + 1) * args.questions]

        async def rollout(task: tuple[str, int], index: int, step: int = step) -> Trajectory:
            return await attempt(model, task[0], task[1], seed=1000 * step + index, stream=args.stream)

        groups = await gather_groups(batch, rollout, GatherConfig(group_size=args.group_size, show_progress=False))
        metrics = await model.train(groups, TrainConfig(learning_rate=args.lr))
        episodes = [t for g in groups for t in g.trajectories]
        n = max(1, len(episodes))
        reward = sum(t.reward for t in episodes) / n
        correct = sum(t.metrics["correct"] for t in episodes) / n
        calls = sum(len(t.turns) for t in episodes)
        bridged = sum(t.metadata["turns_bridged"] for t in episodes)
        broken = sum(t.metadata["turns_broken"] for t in episodes)
        print(
            f"step {step + 1}: reward {reward:.2f}, correct {correct:.0%}, {len(episodes)} episodes, "
            f"{calls} calls ({bridged} bridged, {broken} broken), {metrics['train/datums']:.0f} sequences trained"
        )
    backend.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a LangGraph agent with hone.")
    parser.add_argument("--backend", default=None, help="URL of a `hone serve` (key in HONE_API_KEY); default: in-process")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--questions", type=int, default=4, help="questions per step")
    parser.add_argument("--group-size", type=int, default=6)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--stream", action="store_true", help="stream every model call (ChatOpenAI(streaming=True))")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
