"""Write README.md from nbs/index.ipynb (quarto, which nbdev-readme needs, cannot be installed here)."""
import re, sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

root = Path(__file__).resolve().parent.parent

def render() -> str:
    nb = nbformat.read(root/'nbs'/'index.ipynb', as_version=4)
    nb.cells = [c for c in nb.cells if not c.source.lstrip().startswith('#|')]
    md, _ = MarkdownExporter().from_notebook_node(nb)
    md = re.sub(r'^# (.+)\n\n> (.+)$', r'# \1\n\n> \2', md, count=1, flags=re.M)
    return '<!-- generated from nbs/index.ipynb by .ci/readme.py: edit the notebook -->\n\n' + md.strip() + '\n'

if __name__ == '__main__':
    out = render()
    if '--check' in sys.argv:
        sys.exit(0 if (root/'README.md').read_text() == out else 'README.md is stale: run python .ci/readme.py')
    (root/'README.md').write_text(out)
