"""Assemble benchmarks/RESULTS.md from the sections in benchmarks/results/*.md.

Each benchmark script writes its own section file (with the command that produced its figures);
this concatenates them in a fixed order, so RESULTS.md holds every figure in one place.

    python benchmarks/assemble_results.py
"""

from pathlib import Path

ORDER = ["hardware", "flops", "profilers", "fidelity", "techniques", "parallel", "cost_models", "layerwise", "search"]


def main() -> None:
    here = Path(__file__).parent
    sections = {p.stem: p.read_text().strip() for p in sorted((here / "results").glob("*.md"))}
    names = [n for n in ORDER if n in sections] + sorted(set(sections) - set(ORDER))
    head = ("# Benchmark results\n\nEvery figure below was measured (or derived by a stated formula) by the command "
            "given with it; sections come from `benchmarks/results/<topic>.md`, assembled by "
            "`python benchmarks/assemble_results.py`. Machine: the project's 2-core, 24 GiB CPU machine (shared "
            "with other jobs, so timings are noisy), torch 2.13.0+cpu, unless a section says otherwise.\n")
    text = head + "\n" + "\n\n".join(sections[n] for n in names) + "\n"
    (here / "RESULTS.md").write_text(text)
    print(f"wrote {here / 'RESULTS.md'} from {len(names)} sections: {', '.join(names)}")


if __name__ == "__main__":
    main()
