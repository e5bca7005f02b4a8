"""JUnit XML for ``voxpipe test --junit FILE``: one test case per scenario file, read by CI tools."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from voxpipe.testing.scenario import ScenarioResult

__all__ = ["write_junit"]


def write_junit(
    path: str | Path,
    results: Sequence[ScenarioResult],
    invalid: Sequence[tuple[str, list[str]]] = (),
    *,
    suite: str = "voxpipe scenarios",
) -> None:
    """Write ``results`` (and scenario files that did not validate, as errors) to ``path``."""
    failures = sum(1 for r in results if r.failures and r.error is None)
    errors = sum(1 for r in results if r.error is not None) + len(invalid)
    total_time = sum(r.wall_seconds for r in results)
    attrs = {
        "name": suite,
        "tests": str(len(results) + len(invalid)),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": "0",
        "time": f"{total_time:.3f}",
    }
    root = ET.Element("testsuites", attrs)
    ts = ET.SubElement(root, "testsuite", attrs)
    for r in results:
        case = ET.SubElement(
            ts,
            "testcase",
            {
                "classname": "voxpipe.scenario",
                "name": r.path or r.name,
                "time": f"{r.wall_seconds:.3f}",
            },
        )
        if r.error is not None:
            el = ET.SubElement(case, "error", {"message": r.error})
            el.text = r.report()
        elif r.failures:
            first = r.failures[0]
            message = f"{first.turn}: expected {first.expected}; {first.happened}"
            el = ET.SubElement(case, "failure", {"message": message})
            el.text = r.report()
    for name, problems in invalid:
        case = ET.SubElement(
            ts, "testcase", {"classname": "voxpipe.scenario", "name": name, "time": "0.000"}
        )
        el = ET.SubElement(case, "error", {"message": problems[0] if problems else "invalid"})
        el.text = "\n".join(problems)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
