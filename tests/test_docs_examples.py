"""The Python examples of the README and the model guide run as written.

(The GSD guide's examples run in ``tests/test_gsd.py``; the registry guide's load
the released ViT-L weights, whose loading is tested with mocked URLs in
``tests/test_registry.py``.)
"""

import re
from pathlib import Path

import pytest

from .test_gsd import python_blocks

ROOT = Path(__file__).resolve().parents[1]


def markdown_python_blocks(text: str) -> list[str]:
    return re.findall(r'^```python\n(.*?)^```', text, flags=re.DOTALL | re.MULTILINE)


def run_blocks(blocks: list[str], source: Path) -> None:
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(source), 'exec'), namespace)  # noqa: S102


def test_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    readme = ROOT / 'README.md'
    blocks = markdown_python_blocks(readme.read_text())
    assert len(blocks) == 1
    run_blocks(blocks, readme)
    out = capsys.readouterr().out
    assert 'torch.Size([2, 3, 64, 64]) torch.Size([2, 3, 128, 128])' in out
    assert out.startswith('tensor(')  # the loss


def test_model_guide_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    page = ROOT / 'docs' / 'user' / 'model.rst'
    blocks = python_blocks(page.read_text())
    assert len(blocks) == 1
    run_blocks(blocks, page)
    out = capsys.readouterr().out
    # the output the page shows in its comment
    assert (
        'torch.Size([2, 3, 64, 64]) torch.Size([2, 3, 128, 128]) torch.Size([2, 16])'
        in out
    )
