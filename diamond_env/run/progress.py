"""A progress bar over steps, or over a time budget when one is set."""

from __future__ import annotations

import time
from typing import Any

from tqdm import tqdm


class BudgetBar:
    """tqdm over ``total`` steps; with ``max_minutes > 0`` it fills with elapsed time instead
    (the budget is what the user waits for) and shows the step count beside it."""

    def __init__(
        self, total: int, initial: int, desc: str, max_minutes: float, disable: bool
    ) -> None:
        self.timed = max_minutes > 0
        self.start = time.monotonic()
        self.step = initial
        self.postfix: dict[str, Any] = {}
        if self.timed:
            self.bar = tqdm(
                total=round(60 * max_minutes),
                unit="s",
                desc=desc,
                disable=disable,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}",
            )
        else:
            self.bar = tqdm(total=total, initial=initial, unit="step", desc=desc, disable=disable)

    def update(self, n: int = 1, **postfix: Any) -> None:
        """``n`` more steps done; ``postfix`` values (kept until replaced) are shown beside it."""
        self.step += n
        self.postfix.update(postfix)
        if self.timed:
            self.bar.n = min(self.bar.total, time.monotonic() - self.start)
            self.bar.set_postfix(step=self.step, **self.postfix, refresh=False)
            self.bar.refresh()
        else:
            self.bar.set_postfix(**self.postfix, refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        self.bar.close()
