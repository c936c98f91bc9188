"""Environments the demo, the tests and `hone train` use: tasks, a rollout over an OpenAI client,
and a reward in code. `toolcall`: one tool call per task; `inbox`: questions over synthetic
email inboxes searched with a tool (SQLite FTS5).
"""
