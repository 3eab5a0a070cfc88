"""Build the docs site in site/ from every notebook under nbs/ (and docs/*.md): `python .ci/docs.py`.

quarto, which nbdev-docs needs, cannot be installed here, so the site is mkdocs-material + mkdocs-jupyter
(the `docs` extra). The notebooks are not run: they keep their outputs. Before mkdocs sees them they are staged in
_proc/site-src/ the way nbdev's own docs treat them:
- `#| hide` cells are dropped, `#|` directive lines are taken out of the code shown (and cells left empty go);
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
# Draws every staged plotly output; runs at the end of each page, after the first figure loaded plotly.js.
PLOTLY_GLUE = """if (window.Plotly) document.querySelectorAll('script[type="application/vnd.ftnb.plotly+json"]').forEach(s => {
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

COLAB_BADGE = 'https://colab.research.google.com/assets/colab-badge.svg'
# Our own stand-in for Colab's badge image, so the pages load nothing from outside (the link itself goes to Colab).
BADGE_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" role="img" aria-label="Open in Colab">'
             '<rect width="117" height="20" rx="3" fill="#555"/><rect x="0" width="36" height="20" rx="3" fill="#f9ab00"/>'
             '<text x="18" y="14" fill="#fff" font-family="Verdana,sans-serif" font-size="11" text-anchor="middle">CO</text>'
             '<text x="76" y="14" fill="#fff" font-family="Verdana,sans-serif" font-size="11" text-anchor="middle">Open in Colab</text></svg>')

def fix_links(md: str, src: Path) -> str:
    md = re.sub(r'(\]\()([^)\s]+)(\))', lambda m: m[1] + fix_link(m[2], src) + m[3], md)
    md = re.sub(r'((?:href|src)=")([^"]+)(")', lambda m: m[1] + fix_link(m[2], src) + m[3], md)
    return md.replace(COLAB_BADGE, '../' * len(Path(page_of(src)).parent.parts) + 'assets/open-in-colab.svg')

def plotly_html(fig: dict, n: int, plotly_js: str = None) -> str:
    "A div and the figure as inert JSON (`<` escaped, so no `</script>` can end it early), after plotly.js if given."
    js = json.dumps(fig).replace('<', '\\u003c').replace('>', '\\u003e').replace('&', '\\u0026')
    load = f'<script src="{plotly_js}"></script>' if plotly_js else ''  # only pages with figures load its 4.8 MB
    return (load + f'<div id="ftnb-plotly-{n}" class="ftnb-plotly"></div>'
            f'<script type="application/vnd.ftnb.plotly+json" data-target="ftnb-plotly-{n}">{js}</script>')

def _plotly_loader(o) -> bool:
    "The output by which plotly's 'notebook' renderer puts all of plotly.js (4.8 MB) into a notebook run outside Jupyter."
    h = o.get('data', {}).get('text/html', '')
    return len(h) > 1_000_000 and 'window.PlotlyConfig' in h[:500]

def stage_nb(nb: nbformat.NotebookNode, src: Path, counter: list) -> nbformat.NotebookNode:
    "Notebook `nb` (read from `src`) as the site shows it; `counter[0]` numbers the plotly outputs site-wide."
    cells, loaded = [], False
    for c in nb.cells:
        if c.cell_type == 'markdown': c.source = fix_links(c.source, src)
        if c.cell_type == 'code':
            directives = [l[2:].strip() for l in c.source.splitlines() if l.startswith('#|')]
            if 'hide' in directives: continue
            c.source = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|')).strip('\n')
            if not c.source and not c.get('outputs'): continue  # e.g. the `#| default_exp` cell
            c.outputs = [o for o in c.get('outputs', []) if not _plotly_loader(o)]
            for o in c.outputs:
                if PLOTLY_MIME in o.get('data', {}):
                    counter[0] += 1
                    load = None if loaded else '../' * len(Path(page_of(src)).parent.parts) + 'js/plotly.min.js'
                    o.data, loaded = {'text/html': plotly_html(o.data[PLOTLY_MIME], counter[0], load), 'text/plain': 'plotly figure'}, True
        cells.append(c)
    nb.cells = cells
    return nb

def on_page_content(html, page, config, files):
    "mkdocs hook: point a notebook page's table of contents at the heading ids that nbconvert wrote."
    # mkdocs-jupyter 0.26.3 takes the TOC from a markdown copy that drops inline code, so a heading such as
    # "Overrides: `--set key=value`" got the TOC link #overrides while the heading's id is overrides-set-keyvalue.
    if not page.file.src_uri.endswith('.ipynb'): return html
    html = share_css(html, page)
    text = lambda h: ' '.join(re.sub(r'<code>.*?</code>|<[^>]+>|¶', ' ', h).split())  # the words, as the TOC has them
    heads = [(int(l), i, text(t)) for l, i, t in re.findall(r'<h([1-6])[^>]*\sid="([^"]+)"[^>]*>(.*?)</h\1>', html, re.S)]
    def items(toc):
        for it in toc: yield it; yield from items(it.children)
    k = 0
    for it in items(page.toc):
        for j in range(k, len(heads)):
            if heads[j][0] == it.level and heads[j][2] == text(it.title): it.id, k = heads[j][1], j + 1; break
    return html

NB_CSS = {}  # the notebook stylesheet that mkdocs-jupyter inlines in every page, written once by on_post_build

def share_css(html: str, page) -> str:
    "Link the notebook CSS (about 570 kB, the same on every page) from one file instead of inlining it in each page."
    # Inlined, every page was about 0.75 MB and Chromium took seconds per page on 2 busy cores (measured 2026-12-02).
    big = [m for m in re.finditer(r'<style[^>]*>(.*?)</style>', html, re.S) if len(m[1]) > 100_000]
    if len(big) != 1 or NB_CSS.setdefault('css', big[0][1]) != big[0][1]: return html
    up = '../' * page.file.url.count('/')
    html = html[:big[0].start()] + f'<link rel="stylesheet" href="{up}assets/ftnb-notebook.css">' + html[big[0].end():]
    return re.sub(r"<style>\s*\['.*?'\]\s*</style>", '', html, flags=re.S)  # mkdocs-jupyter 0.26.3 appends the pygments CSS a 2nd time, as a list repr

def on_post_build(config):
    "mkdocs hook: write the shared notebook stylesheet."
    if 'css' in NB_CSS: (Path(config['site_dir'])/'assets'/'ftnb-notebook.css').write_text(NB_CSS['css'])

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
    (STAGE/'assets').mkdir(); (STAGE/'assets'/'open-in-colab.svg').write_text(BADGE_SVG)
    counter, nav_tut, nav_api = [0], [], []
    for src in notebooks():
        page = page_of(src)
        dest = STAGE/page.replace('.html', '.ipynb'); dest.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(stage_nb(nbformat.read(src, as_version=4), src, counter), dest)
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
    cfg = {'INHERIT': '../mkdocs.yml', 'docs_dir': 'site-src', 'site_dir': '../site', 'hooks': ['../.ci/docs.py'], 'nav': nav}
    (ROOT/'_proc'/'mkdocs.yml').write_text('# written by .ci/docs.py: edit mkdocs.yml or the script\n' + yaml.safe_dump(cfg, sort_keys=False))
    return dict(notebooks=len(notebooks()), plotly_figures=counter[0], reference=len(nav_ref))

if __name__ == '__main__':
    t0 = time.time()
    counts = stage()
    r = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '--clean', '-q', '-f', str(ROOT/'_proc'/'mkdocs.yml')], cwd=ROOT,
                       env=dict(os.environ, NO_MKDOCS_2_WARNING='1'))  # material's end-of-life banner
    if r.returncode: sys.exit(f'mkdocs build failed (exit {r.returncode})')
    print(f'site/ built from {counts} in {time.time()-t0:.0f} s: open site/index.html, or `python -m http.server -d site`')
