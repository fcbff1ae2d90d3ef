import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_two_commands_and_ci_runs_the_second_verbatim():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    setup, tests = blocks[0].strip(), blocks[1].strip()
    assert "train.py" in setup and "evaluate.py" in setup and "pytest" in tests
    head = (ROOT / "README.md").read_text().split("```bash")[0]
    assert head.count("\n") <= 2  # nothing but the title before the commands
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()
