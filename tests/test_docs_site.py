"""The docs site (python .ci/docs.py -> site/) in a real browser: every internal link answers, every plotly figure draws.

site/ is built by .ci/run before pytest; this test builds it again only when it is missing or older than its sources.
It serves site/ on loopback, opens index.html in Debian's headless Chromium (Playwright, as tests/test_browser.py),
follows every internal link from every page it reaches, blocks and records any request that leaves loopback, and on
each page whose notebook holds plotly outputs checks that each one is drawn by plotly.js with its data."""
import functools, importlib.util, json, os, shutil, threading, time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag
import nbformat, pytest, tomllib, yaml

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT/'site'
CHROMIUM = os.environ.get('CHROMIUM') or shutil.which('chromium') or '/usr/bin/chromium'
CHROME_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
               '--disable-background-networking', '--disable-component-update', '--disable-sync']
spec = importlib.util.spec_from_file_location('docs_build', ROOT/'.ci'/'docs.py')
docs = importlib.util.module_from_spec(spec); spec.loader.exec_module(docs)
FIGS = """() => [...document.querySelectorAll('.ftnb-plotly')].map(d => ({  // each staged plotly output, as plotly.js holds it
  drawn: d.classList.contains('js-plotly-plot') && !!d.querySelector('.main-svg'),
  traces: (d.data || []).length, points: (d._fullData || []).reduce((n, t) => n + (t._length || 0), 0),  // decoded (plotly 6 ships arrays as base64)
  marks: d.querySelectorAll('.scatterlayer .js-line, .point').length}))"""


def plotly_outputs(nb: Path) -> int:
    "How many plotly figures a notebook's stored outputs hold."
    return sum(docs.PLOTLY_MIME in o.get('data', {}) for c in nbformat.read(nb, as_version=4).cells for o in c.get('outputs', []))


def test_config_consistent():
    "pyproject's Documentation URL and doc_path name the site that mkdocs.yml builds."
    pp = tomllib.loads((ROOT/'pyproject.toml').read_text())
    mk = yaml.safe_load((ROOT/'mkdocs.yml').read_text())
    assert mk['site_url'].rstrip('/') == pp['project']['urls']['Documentation'].rstrip('/')
    assert pp['tool']['nbdev']['doc_path'] == 'site' and '\nsite/\n' in (ROOT/'.gitignore').read_text()
    assert {'mkdocs-material', 'mkdocs-jupyter'} <= {r.split('>')[0] for r in pp['project']['optional-dependencies']['dev']}


def test_staging(tmp_path):
    "Plotly JSON gets a drawable HTML twin, hidden cells and directives go, links map to pages or GitHub."
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell('# T\n[data](../02_data.ipynb#load), [errors](../../docs/errors.md), '
                                      '[bench](../../bench/README.md), [x](https://x.org)'),
        nbformat.v4.new_code_cell('#| hide\nsecret = 1'),
        nbformat.v4.new_code_cell('#| export\nfig', outputs=[nbformat.v4.new_output(
            'display_data', {docs.PLOTLY_MIME: {'data': [{'y': [1, 2], 'name': '</script><b>'}], 'layout': {}}})])])
    src = docs.NBS/'tutorials'/'_staging_probe.ipynb'  # a path inside nbs/ (never written) for the link base
    n = [0]
    out = docs.stage_nb(nb, src, n)
    assert [c.cell_type for c in out.cells] == ['markdown', 'code'] and out.cells[1].source == 'fig'
    md = out.cells[0].source
    assert '(../02_data.html#load)' in md and '(../docs/errors.html)' in md and '(https://x.org)' in md
    assert '(https://github.com/ftnb/ftnb/blob/main/bench/README.md)' in md
    html = out.cells[1].outputs[0].data['text/html']
    assert n == [1] and html.startswith('<script src="../js/plotly.min.js"></script><div id="ftnb-plotly-1"')
    assert '</script><b>' not in html and '\\u003c/script\\u003e\\u003cb\\u003e' in html  # the JSON cannot end its script early
    bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('[gone](no_such.ipynb)')])
    with pytest.raises(SystemExit, match='no_such.ipynb'): docs.stage_nb(bad, src, [0])


def sources() -> list[Path]:
    return docs.notebooks() + sorted((ROOT/'docs').glob('*.md')) + [ROOT/'mkdocs.yml', ROOT/'.ci'/'docs.py']


@pytest.fixture(scope='module')
def site():
    "site/ (built when missing or stale) served on a free loopback port; yields its base URL."
    index = SITE/'index.html'
    if not index.exists() or index.stat().st_mtime < max(p.stat().st_mtime for p in sources()):
        import subprocess, sys
        r = subprocess.run([sys.executable, str(ROOT/'.ci'/'docs.py')], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    srv = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(SITE)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try: yield f'http://127.0.0.1:{srv.server_address[1]}/'
    finally: srv.shutdown(); srv.server_close()


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_links_and_figures(site, tmp_path):
    "Every page the nav and links reach answers 200, every #anchor exists, every plotly output draws its data."
    if not Path(CHROMIUM).exists(): pytest.skip(f'chromium is not installed ({CHROMIUM}); CI installs it with apt-get')
    from playwright.sync_api import sync_playwright
    want = {docs.page_of(nb): plotly_outputs(nb) for nb in docs.notebooks()}
    assert sum(want.values()) > 0 or not list((docs.NBS/'tutorials').glob('*.ipynb')), 'the tutorials hold no plotly figure'
    t0, errors, external, bad, figs = time.time(), [], [], [], {}
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path/'profile'), executable_path=CHROMIUM, headless=True,
                                                   args=CHROME_ARGS, viewport={'width': 1366, 'height': 900},
                                                   env=dict(os.environ, HOME=str(tmp_path)))
        def route(r):
            if r.request.url.startswith((site, 'data:', 'blob:')): return r.continue_()
            external.append(r.request.url); r.abort()
        ctx.route('**/*', route)
        page = ctx.pages[0]
        page.on('pageerror', lambda e: errors.append(f'{page.url}: {e}'))
        page.on('response', lambda r: r.status >= 400 and bad.append(f'{r.status} {r.url} (on {page.url})'))
        todo, seen, frags, ids = [site + 'index.html'], set(), [], {}
        while todo:
            url = todo.pop()
            if url in seen: continue
            seen.add(url)
            resp = page.goto(url, wait_until='load')
            if resp is None or resp.status != 200: bad.append(f'{resp and resp.status} {url}'); continue
            if not url.endswith('.html'): continue  # a file, not a page: nothing to follow
            rel = url[len(site):]
            if want.get(rel):
                page.wait_for_function(f'() => ({FIGS})().filter(f => f.drawn).length >= {want[rel]}', timeout=20_000)
                figs[rel] = page.evaluate(FIGS)
            ids[url] = set(page.eval_on_selector_all('[id]', 'es => es.map(e => e.id)'))
            for href in page.eval_on_selector_all('a[href]', 'as => as.map(a => a.href)'):
                u, frag = urldefrag(href)
                if not u.startswith(site): continue
                if frag: frags.append((u, unquote(frag), url))
                if u not in seen: todo.append(u)
        ctx.close()
    for u, frag, on in frags:  # a link's #anchor names an element of the page it points at
        if u in ids and frag not in ids[u]: bad.append(f'#{frag} missing on {u} (linked from {on})')
    pages = {u[len(site):] for u in seen if u.endswith('.html')}
    assert not bad and not errors and not external, (bad, errors, external)
    assert {p for p in want} <= pages, sorted(set(want) - pages)  # the nav reaches every notebook
    assert {'docs/errors.html', 'docs/claims.html'} <= pages
    for rel, n in want.items():
        if n: assert len(figs[rel]) == n and all(f['drawn'] and f['traces'] and f['points'] and f['marks'] for f in figs[rel]), (rel, figs[rel])
    print(f'\ndocs site: {len(pages)} pages, {len(seen)} URLs, {sum(want.values())} figures on '
          f'{sum(1 for n in want.values() if n)} pages, checked in {time.time() - t0:.0f} s')
