"""Build the docs site in site/ from every notebook under nbs/ (and docs/*.md): `python .ci/docs.py`.

quarto, which nbdev-docs needs, cannot be installed here, so the site is mkdocs-material + mkdocs-jupyter
(the `docs` extra). The notebooks are not run: they keep their outputs. Before mkdocs sees them they are staged in
_proc/site-src/ the way nbdev's own docs treat them:
- `#| hide` cells are dropped and `#|` directive lines are taken out of the code shown;
- links to other notebooks or markdown files point at their pages (`x.ipynb` -> `x.html`), and links to other
  files of the repository (tests, bench results) point at them on GitHub, so the site has no dead internal links;
- plotly outputs (`application/vnd.plotly.v1+json`, what plotly writes in a Jupyter kernel) get an HTML
  representation drawn by js/ftnb-plotly.js with the plotly.js that the plotly package ships: nbconvert,
  which mkdocs-jupyter uses, renders no plotly JSON, and the site loads nothing from a CDN.
The nav is generated: Home (index), Tutorials (nbs/tutorials/), API (the other notebooks), Reference (docs/*.md),
so a new notebook appears without editing mkdocs.yml."""
import json, os, re, shutil, subprocess, sys, time
from pathlib import Path
import nbformat, yaml

ROOT = Path(__file__).resolve().parent.parent
NBS, STAGE = ROOT/'nbs', ROOT/'_proc'/'site-src'
REPO_URL = 'https://github.com/ftnb/ftnb/blob/main/'
PLOTLY_MIME = 'application/vnd.plotly.v1+json'
# Draws every staged plotly output once plotly.js (loaded just before this, see mkdocs.yml) is there.
PLOTLY_GLUE = """document.querySelectorAll('script[type="application/vnd.ftnb.plotly+json"]').forEach(s => {
  const fig = JSON.parse(s.textContent), div = document.getElementById(s.dataset.target);
  Plotly.newPlot(div, fig.data || [], fig.layout || {}, Object.assign({responsive: true}, fig.config || {}));
});
"""

def notebooks() -> list[Path]:
    "Every notebook under nbs/, tutorials included (checkpoints and `_`-prefixed drafts left out)."
    return sorted(p for p in NBS.rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts and not p.name.startswith('_'))

def page_of(path: Path) -> str:
    "The site path of a notebook or markdown file of the repo, relative to the site root (None if not a page)."
    rel = path.resolve()
    if rel.suffix == '.ipynb' and rel.is_relative_to(NBS): return rel.relative_to(NBS).with_suffix('.html').as_posix()
    if rel.suffix == '.md' and rel.parent == ROOT/'docs': return 'docs/' + rel.with_suffix('.html').name
    return None

def fix_link(target: str, src: Path) -> str:
    "A markdown link of notebook `src` as the site needs it; raises if it names a file the repository lacks."
    if re.match(r'^([a-z][a-z0-9+.-]*:|#|/)', target, re.I): return target  # external, anchor or absolute
    path, _, frag = target.partition('#')
    base = ROOT if src == NBS/'index.ipynb' else src.parent  # index.ipynb becomes README.md: its links start at the root
    dest = (base/path).resolve()
    if not dest.exists(): raise SystemExit(f'{src.relative_to(ROOT)}: link to {target!r}, which does not exist. Fix: correct the link')
    page = page_of(dest)
    if page is None: return REPO_URL + dest.relative_to(ROOT).as_posix() + (f'#{frag}' if frag else '')
    here = Path(page_of(src)).parent
    rel = Path(*(['..'] * len(here.parts)), page).as_posix() if here.parts else page
    return rel + (f'#{frag}' if frag else '')

def fix_links(md: str, src: Path) -> str:
    md = re.sub(r'(\]\()([^)\s]+)(\))', lambda m: m[1] + fix_link(m[2], src) + m[3], md)
    return re.sub(r'((?:href|src)=")([^"]+)(")', lambda m: m[1] + fix_link(m[2], src) + m[3], md)

def plotly_html(fig: dict, n: int) -> str:
    "A div and the figure as inert JSON (`<` escaped, so no `</script>` can end it early)."
    js = json.dumps(fig).replace('<', '\\u003c').replace('>', '\\u003e').replace('&', '\\u0026')
    return (f'<div id="ftnb-plotly-{n}" class="ftnb-plotly"></div>'
            f'<script type="application/vnd.ftnb.plotly+json" data-target="ftnb-plotly-{n}">{js}</script>')

def stage_notebook(src: Path, counter: list) -> nbformat.NotebookNode:
    nb = nbformat.read(src, as_version=4)
    cells = []
    for c in nb.cells:
        if c.cell_type == 'markdown': c.source = fix_links(c.source, src)
        if c.cell_type == 'code':
            directives = [l[2:].strip() for l in c.source.splitlines() if l.startswith('#|')]
            if 'hide' in directives: continue
            c.source = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|')).strip('\n')
            for o in c.get('outputs', []):
                if PLOTLY_MIME in o.get('data', {}):
                    counter[0] += 1
                    o.data = {'text/html': plotly_html(o.data[PLOTLY_MIME], counter[0]), 'text/plain': 'plotly figure'}
        cells.append(c)
    nb.cells = cells
    return nb

def nav_title(src: Path) -> str:
    "The notebook's first `# ` heading, else its name."
    for c in nbformat.read(src, as_version=4).cells:
        if c.cell_type == 'markdown' and (m := re.search(r'^# (.+)$', c.source, re.M)): return m[1].strip()
    return src.stem

def stage() -> dict:
    "Write _proc/site-src/ and _proc/mkdocs.yml; return counts."
    shutil.rmtree(STAGE, ignore_errors=True)
    (STAGE/'js').mkdir(parents=True)
    import plotly
    shutil.copy(Path(plotly.__file__).parent/'package_data'/'plotly.min.js', STAGE/'js'/'plotly.min.js')
    (STAGE/'js'/'ftnb-plotly.js').write_text(PLOTLY_GLUE)
    counter, nav_tut, nav_api = [0], [], []
    for src in notebooks():
        page = page_of(src)
        dest = STAGE/page.replace('.html', '.ipynb'); dest.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(stage_notebook(src, counter), dest)
        rel = dest.relative_to(STAGE).as_posix()
        if rel == 'index.ipynb': continue
        (nav_tut if rel.startswith('tutorials/') else nav_api).append({nav_title(src): rel})
    (STAGE/'docs').mkdir()
    nav_ref = []
    for md in sorted((ROOT/'docs').glob('*.md')):
        shutil.copy(md, STAGE/'docs'/md.name)
        t = re.search(r'^# (.+)$', md.read_text(), re.M)
        nav_ref.append({t[1] if t else md.stem: f'docs/{md.name}'})
    nav = [{'Home': 'index.ipynb'}] + [{k: v} for k, v in
           (('Tutorials', nav_tut), ('API', nav_api), ('Reference', nav_ref)) if v]
    cfg = {'INHERIT': '../mkdocs.yml', 'docs_dir': 'site-src', 'site_dir': '../site', 'nav': nav}
    (ROOT/'_proc'/'mkdocs.yml').write_text('# written by .ci/docs.py: edit mkdocs.yml or the script\n' + yaml.safe_dump(cfg, sort_keys=False))
    return dict(notebooks=len(notebooks()), plotly_figures=counter[0], reference=len(nav_ref))

if __name__ == '__main__':
    t0 = time.time()
    counts = stage()
    r = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '--clean', '-q', '-f', str(ROOT/'_proc'/'mkdocs.yml')], cwd=ROOT,
                       env=dict(os.environ, NO_MKDOCS_2_WARNING='1'))  # material's end-of-life banner
    if r.returncode: sys.exit(f'mkdocs build failed (exit {r.returncode})')
    print(f'site/ built from {counts} in {time.time()-t0:.0f} s: open site/index.html, or `python -m http.server -d site`')
