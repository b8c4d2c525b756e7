"""What the two HTML pages (``rlvr-explore report`` and ``compare``) share: one stylesheet that
fits 800- and 1,280-pixel windows without sideways scrolling, figures, numbers, and the warning
for a run whose training reward collapsed."""

from __future__ import annotations

import html
from typing import Mapping, Sequence

import numpy as np

STYLE = """<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em;box-sizing:border-box}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
figure{display:inline-block;margin:8px;vertical-align:top;width:min(100%,600px)}
figure img{width:100%;height:auto}
figcaption{font-size:.85em;color:#444}
figure.wide{display:block;width:100%}
.warning{border-left:4px solid #c00;background:#fff4f4;padding:.4em .8em}
nav{margin:.5em 0 1em}
</style>"""

COLLAPSE_FRACTION = 0.25  # training reward in the last tenth of steps below this share of the first tenth's


def figure(src: str, caption: str, wide: bool = False) -> str:
    """A figure that opens at full size on a click; ``wide`` ones take the page's width."""
    return (f'<figure class="{"wide" if wide else ""}"><a href="{html.escape(src)}"><img src="{html.escape(src)}" '
            f'alt="{html.escape(caption)}"></a><figcaption>{html.escape(caption)}</figcaption></figure>')


def number(value, digits: int = 3) -> str:
    """Counts as integers, other values with ``digits`` decimals."""
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer() and abs(value) >= 2):
        return str(int(value))
    return f"{value:.{digits}f}"


def collapse(steps: Sequence[float], rewards: Sequence[float]) -> tuple[float, float, int] | None:
    """(mean reward of the first tenth of training, of the last tenth, the first step of the last
    tenth) when the last is below ``COLLAPSE_FRACTION`` of the first; None otherwise."""
    rewards = np.asarray([r for r in rewards if r == r], float)  # a skipped step's NaN says nothing
    if len(rewards) < 10:
        return None
    tenth = max(1, len(rewards) // 10)
    first, last = float(rewards[:tenth].mean()), float(rewards[-tenth:].mean())
    if first > 0 and last < COLLAPSE_FRACTION * first:
        return first, last, int(steps[len(steps) - tenth])
    return None


def collapse_warnings(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], pass_at_1: Mapping[str, float],
                      figure_src: str | None) -> str:
    """A warning per collapsed run, pointing at the training-reward figure (``figure_src``)."""
    items = []
    for name, (steps, rewards) in curves.items():
        found = collapse(steps, rewards)
        if found is None:
            continue
        first, last, from_step = found
        items.append(f"<li><b>{html.escape(name)}</b>: training reward fell from {first:.3f} (first tenth of the steps) "
                     f"to {last:.3f} (from step {from_step} on), and its final pass@1 is {pass_at_1.get(name, float('nan')):.3f}. "
                     "The method collapsed in this setting; this is a result, not a crash.</li>")
    if not items:
        return ""
    see = f' Its reward curve: <a href="{html.escape(figure_src)}">training reward</a>.' if figure_src else ""
    return f'<div class="warning"><b>Collapsed runs.</b>{see}<ul>{"".join(items)}</ul></div>'
