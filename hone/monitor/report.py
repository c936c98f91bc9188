"""A self-contained HTML report of a run: curves, before/after bars, and trajectories a person can read."""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def curves_png(history: list[dict[str, Any]], keys: list[tuple[str, str]]) -> bytes:
    """One panel per (metric key, title) over training steps, as PNG bytes."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.4), squeeze=False)
    steps = [r["step"] for r in history]
    for ax, (key, title) in zip(axes[0], keys):
        values = [r.get(key) for r in history]
        points = [(s, v) for s, v in zip(steps, values) if isinstance(v, (int, float))]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return png_bytes(fig)


def before_after_png(labels: list[str], values: list[float], intervals: list[tuple[float, float]], title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    errors = [[v - lo for v, (lo, _) in zip(values, intervals)], [hi - v for v, (_, hi) in zip(values, intervals)]]
    ax.bar(labels, values, yerr=errors, capsize=8, color=["#9aa5b1", "#c9a227", "#2f80ed"][-len(values) :] if len(values) <= 3 else None)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    for i, v in enumerate(values):
        ax.text(i, v + 0.02, f"{v:.0%}", ha="center")
    fig.tight_layout()
    return png_bytes(fig)


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes; closes it (a report rewritten every step must not pile up figures)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    """An <img> holding the PNG as a data: URI, so the page needs no other file."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def trajectory_html(trajectory: Any, title: str) -> str:
    rows = []
    for message in trajectory.messages:
        role = message.get("role", "?")
        if role == "system":
            continue
        content = message.get("content") or ""
        calls = message.get("tool_calls") or []
        call_text = "\n".join(f"→ {c['function']['name']}({c['function']['arguments']})" for c in calls)
        body = "\n".join(part for part in (content, call_text) if part)
        rows.append(f'<div class="msg {html.escape(role)}"><b>{html.escape(role)}</b><pre>{html.escape(body[:1500])}</pre></div>')
    facts = html.escape(json.dumps({"reward": round(trajectory.reward, 3), **trajectory.metrics, **_short(trajectory.metadata)}))
    return f'<details><summary>{html.escape(title)}</summary><p class="facts">{facts}</p>{"".join(rows)}</details>'


def _short(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool)) and len(str(v)) < 200}


def write_report(path: Any, title: str, summary_rows: list[tuple[str, str, str]], images: list[tuple[bytes, str]], sections: list[tuple[str, list[str]]]) -> None:
    table = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>" for a, b, c in summary_rows)
    pictures = "".join(img_tag(png, alt) for png, alt in images)
    body = "".join(f"<h2>{html.escape(name)}</h2>{''.join(items)}" for name, items in sections)
    path.write_text(
        f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px}}img{{max-width:100%;margin:6px}}
details{{margin:6px 0;border:1px solid #ddd;padding:6px}}pre{{white-space:pre-wrap;margin:2px 0 8px 0}}
.msg.user{{background:#f4f7fb}}.msg.assistant{{background:#f3fbf4}}.msg.tool{{background:#fbf8f1}}.facts{{color:#555;font-size:90%}}</style>
</head><body><h1>{html.escape(title)}</h1><table><tr><th></th><th>before</th><th>after</th></tr>{table}</table>
{pictures}{body}</body></html>"""
    )
