"""Many scenario files at once, for ``voxpipe test``: find them, validate all, run (in parallel).

Every file is validated before any runs, so a typo is reported at once (one line per
problem). With ``jobs`` > 1 scenarios run in worker processes: each is a whole call on its
own virtual clock, so processes (not threads) are what spreads them over the cores. Spoken
scenarios (``audio``) always run one per fresh process, so their result does not depend on
what ran before them.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from voxpipe.testing.scenario import ScenarioResult, run_scenario
from voxpipe.testing.scenario_schema import Scenario, ScenarioError, load_scenario

__all__ = ["SuiteResult", "collect_scenarios", "run_suite"]

SUFFIXES = (".yaml", ".yml")


@dataclass(slots=True)
class SuiteResult:
    """Results in the order the files were given, and the files that did not validate."""

    results: list[ScenarioResult] = field(default_factory=list)
    invalid: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed


def collect_scenarios(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Scenario files under ``paths`` (files as given; directories searched for *.yaml, *.yml),
    and one problem line for each path that does not exist."""
    found: list[Path] = []
    missing: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix in SUFFIXES and f.is_file())
        elif p.is_file():
            found.append(p)
        else:
            missing.append(f"{p}: no such file or directory")
    return found, missing


def _run_one(path: str, audio: bool, live: bool) -> ScenarioResult:
    from voxpipe.config.settings import get_settings

    return run_scenario(path, audio=audio, live=live, settings=get_settings())


def _safe_run(path: str, audio: bool, live: bool) -> ScenarioResult:
    try:
        return _run_one(path, audio, live)
    except (
        ScenarioError
    ) as exc:  # found only once running (e.g. `replies:` for a bot without a script)
        return ScenarioResult(Path(path).stem, path, error="; ".join(exc.problems))


def run_suite(
    paths: Iterable[str | Path],
    *,
    audio: bool = False,
    live: bool = False,
    jobs: int = 1,
    validate_only: bool = False,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> SuiteResult:
    """Validate every scenario under ``paths``; unless any is invalid, run them all."""
    files, missing = collect_scenarios(paths)
    suite = SuiteResult(invalid=[(m.split(":")[0], [m]) for m in missing])
    valid: list[Scenario] = []
    for f in files:
        try:
            valid.append(load_scenario(f))
        except ScenarioError as exc:
            suite.invalid.append((str(f), exc.problems))
    if suite.invalid or validate_only:
        return suite
    names = [str(s.path) for s in valid]
    if not audio and (jobs <= 1 or len(names) <= 1):
        for name in names:
            result = _safe_run(name, audio, live)
            suite.results.append(result)
            if on_result is not None:
                on_result(result)
        return suite
    # spawn: a forked child would inherit the parent's threads' locks (logging, SQLite).
    ctx = multiprocessing.get_context("spawn")
    # Spoken scenarios each get a fresh process: espeak-ng's waveform (and so what the
    # recogniser hears) depends on everything it synthesized before in the process.
    fresh = 1 if audio else None
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=max(1, jobs), mp_context=ctx, max_tasks_per_child=fresh
    ) as pool:
        futures = [pool.submit(_safe_run, name, audio, live) for name in names]
        for future in futures:  # in file order, whatever order they finish in
            result = future.result()
            suite.results.append(result)
            if on_result is not None:
                on_result(result)
    return suite
