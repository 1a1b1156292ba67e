"""The README's generated parts, kept in step with the code that they describe.

``python -m jupyter_burst.tools.readme_tables`` rewrites them; ``--check`` exits non-zero,
naming the part, when the README differs (tests/test_docs.py runs it).
"""

from __future__ import annotations

import pathlib
import sys

from jupyter_burst.kernel.verb_help import readme_table

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"

# name -> the text between its two markers
PARTS = {"verbs": readme_table}


def markers(name: str) -> tuple[str, str]:
    return (
        f"<!-- {name}: written by python -m jupyter_burst.tools.readme_tables -->",
        f"<!-- {name}: end -->",
    )


def rewritten(text: str) -> str:
    for name, make in PARTS.items():
        begin, end = markers(name)
        head, found, rest = text.partition(begin + "\n")
        if not found or end not in rest:
            raise SystemExit(f"README.md lacks the markers of its '{name}' table: {begin}")
        _, _, tail = rest.partition(end)
        text = f"{head}{begin}\n{make()}\n{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = README.read_text()
    new = rewritten(text)
    if "--check" in argv:
        if new != text:
            print(
                "README.md's generated tables are out of date; "
                "run: python -m jupyter_burst.tools.readme_tables",
                file=sys.stderr,
            )
            return 1
        return 0
    if new != text:
        README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
