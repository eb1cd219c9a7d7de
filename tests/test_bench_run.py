"""``python -m bench.run`` rewrites the sections it measured and keeps every other line."""

from __future__ import annotations

from pathlib import Path

from bench.run import SECTIONS, stamped, write_section

BEFORE = """# Benchmarks

Intro.

## Planner: one `plan()` call (bench/bench_planner.py)

old planner table

## Throughput: the default window (measured by hand)

Hand-written notes, kept.

### A subsection of the notes

Also kept.

## Ingestion: accepted deliveries per second (bench/bench_ingest.py)

old ingestion figures
"""


def test_a_section_is_replaced_and_the_hand_written_ones_are_kept(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text(BEFORE)
    write_section(["## Planner: one `plan()` call (bench/bench_planner.py)", "", "new", ""], out)
    write_section(
        ["## Ingestion: accepted deliveries per second (bench/bench_ingest.py)", "", "fresh"], out
    )
    write_section(["## Something new (bench/bench_new.py)", "", "appended"], out)
    text = out.read_text()
    assert "old planner table" not in text and "old ingestion figures" not in text
    assert text == (
        BEFORE.replace("old planner table", "new")
        .replace("old ingestion figures\n", "fresh\n")
        .rstrip("\n")
        + "\n\n## Something new (bench/bench_new.py)\n\nappended\n"
    )


def test_a_section_is_stamped_with_its_command() -> None:
    section = stamped(["## Heading", "", "body"], "ingest", ["--runs", "5"])
    assert section[0] == "## Heading" and section[3:] == ["", "body"]
    assert section[2].startswith("Measured 20")
    assert section[2].endswith("with `.venv/bin/python -m bench.run ingest --runs 5`.")


def test_every_benchmark_is_named_in_the_file_s_header() -> None:
    documented = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
    header = documented.read_text().split("\n## ", 1)[0]
    for name in SECTIONS:
        assert f"`{name}`" in header
