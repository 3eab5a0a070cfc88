"""ftnb's panel, live dashboard and rollout browser in a real browser: JupyterLab and Notebook 7 on loopback, Debian's
headless Chromium via Playwright.

It runs tests/browser/panel.ipynb, checks the panels rendered, edits a field and reads the config back from the
kernel, pages and steps through the rollout browser of a recorded GRPO run (`open_run`), trains the tiny model until
the dashboard has drawn points (the tabs fold into a summary line meanwhile, the headline row counts steps), checks
the kernel still answers, stops, finds the checkpoint, and sees the tabs open again. CI runs it in JupyterLab and in
Notebook 7, each with the widget dashboard and with the handle one (the Colab fallback): all four pairs. The negative
control, in JupyterLab with widgets and in Notebook 7 with handles, is a dashboard that never draws: the points check
must find none.
Screenshots go to tests/browser/screenshots/ (git-ignored) and to pytest's tmp dir.
Recipe: ../shared/browser/README.md (flags, settings and pitfalls found on this kind of machine)."""
import importlib.util, json, os, re, shutil, socket, subprocess, sys, time, urllib.request
from contextlib import contextmanager
from pathlib import Path
import pytest

HERE = Path(__file__).parent/'browser'
GRPO_RUN = Path(__file__).parent/'fixtures'/'grpo_cpu_run'  # a real recorded GRPO run: 12 steps of 4 prompts x 4 completions
CHROMIUM = os.environ.get('CHROMIUM') or shutil.which('chromium') or '/usr/bin/chromium'
CHROME_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
               '--disable-background-networking', '--disable-component-update', '--disable-sync']
APPS = {'lab': ('jupyterlab', 'LabApp', 'lab/tree'), 'notebook': ('notebook', 'JupyterNotebookApp', 'notebooks')}
KERNEL_READY = """() => {  // the toolbar says "idle" while there is still no kernel: wait for a connected, idle one
  const sc = window.jupyterapp?.shell.currentWidget?.sessionContext, k = sc?.session?.kernel;
  return !!(sc?.isReady && !sc.hasNoKernel && k?.connectionStatus === 'connected' && k.status === 'idle');
}"""
RUN_CELL = """async (i) => {  // run cell i and resolve when it is done
  const nb = window.jupyterapp.shell.currentWidget; nb.content.activeCellIndex = i;
  return await window.jupyterapp.commands.execute('notebook:run-cell');
}"""
# where the live plots are: widget mode draws one FigureWidget in the dashboard box; handle mode mirrors one grid figure
# into an Output widget (RunControl._mirror_figs)
PLOTS = {'widget': '.ftnb-panel .ftnb-live .ftnb-dashboard .js-plotly-plot',
         'handle': '.ftnb-panel .ftnb-live .widget-output .js-plotly-plot'}
POINTS = """(sel) => {  // points of the training-loss trace in ftnb's live dashboard, as plotly.js holds them (gd.data)
  // a figure sent as JSON (handle mode) keeps its arrays as base64 specs {dtype, bdata} in gd.data
  const size = {f8: 8, f4: 4, i4: 4, u4: 4, i2: 2, u2: 2, i1: 1, u1: 1, u1c: 1};
  const len = x => !x ? 0 : x.bdata === undefined ? x.length : x.shape ? +String(x.shape).split(',')[0]
                         : (typeof x.bdata === 'string' ? atob(x.bdata).length : x.bdata.byteLength) / size[x.dtype];
  const gds = [...document.querySelectorAll(sel)];
  return Math.max(0, ...gds.flatMap(g => (g.data || []).filter(t => t.name === 'train loss').map(t => len(t.x))));
}"""

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture
def server(request, tmp_path):
    "JupyterLab or Notebook 7 on a free loopback port, every Jupyter folder inside tmp_path; yields the notebook URL."
    opt = {'app': 'lab', 'mode': 'widget', 'negative': False, 'nb': 'panel.ipynb', **getattr(request, 'param', {})}
    module, A, path = APPS[opt['app']]
    if not Path(CHROMIUM).exists(): pytest.skip(f'chromium is not installed ({CHROMIUM}); CI installs it with apt-get')
    if not importlib.util.find_spec(module): pytest.skip(f'{module} is not installed; the dev extras install it')
    root = tmp_path/'root'; root.mkdir()
    shutil.copy(HERE/opt['nb'], root/opt['nb']); shutil.copytree(GRPO_RUN, root/'grpo_cpu_run')
    (tmp_path/'overrides.json').write_text(json.dumps(  # no "fetch Jupyter news?" toast
        {'@jupyterlab/apputils-extension:notification': {'fetchNews': 'false', 'checkForUpdates': False}}))
    port = free_port()
    cmd = [sys.executable, '-m', module, '--no-browser', f'--port={port}', '--ServerApp.port_retries=0',
           '--ServerApp.ip=127.0.0.1', '--IdentityProvider.token=test', f'--ServerApp.root_dir={root}',
           f'--{A}.expose_app_in_browser=True', f'--{A}.user_settings_dir={tmp_path/"us"}',
           f'--{A}.workspaces_dir={tmp_path/"ws"}', f'--{A}.app_settings_dir={tmp_path}',
           '--ServerApp.jpserver_extensions', 'jupyter_lsp=False']  # jupyter_lsp runs `npm prefix -g` at start
    if opt['app'] == 'lab': cmd += ['--LabApp.news_url=None', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate',
                                    '--LabApp.extension_manager=readonly']
    if os.geteuid() == 0: cmd.append('--allow-root')
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path/'jc'), JUPYTER_DATA_DIR=str(tmp_path/'jd'),
               JUPYTER_RUNTIME_DIR=str(tmp_path/'rt'), IPYTHONDIR=str(tmp_path/'ipy'), FTNB_BROWSER_RUNS=str(tmp_path/'runs'),
               FTNB_BROWSER_MODE=opt['mode'], HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', TRANSFORMERS_OFFLINE='1',
               TOKENIZERS_PARALLELISM='false',
               **({'FTNB_BROWSER_NEGATIVE': '1'} if opt['negative'] else {}))  # the negative control's dashboard never draws
    t0, log = time.time(), open(tmp_path/'server.log', 'w')
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(120):
            assert proc.poll() is None, (tmp_path/'server.log').read_text()[-3000:]
            try: urllib.request.urlopen(f'http://127.0.0.1:{port}/api/status?token=test', timeout=1); break
            except OSError: time.sleep(0.5)
        else: pytest.fail(f'{module} did not answer in 60 s')
        yield dict(opt, t0=t0, url=f'http://127.0.0.1:{port}/{path}/{opt["nb"]}?token=test', runs=tmp_path/'runs'/'browser',
                   name=f"{opt['app']}-{opt['mode']}")
    finally:
        proc.terminate()  # SIGTERM: the server shuts the kernel (and its training thread) down, then exits
        try: proc.wait(30)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        log.close()


def screenshot(page, loc, path:Path):
    "A screenshot of `loc`; of its box on the page if it never holds still (handle mode redraws its output twice a second)."
    try: loc.screenshot(path=str(path), timeout=10_000)
    except Exception:
        print(f'{path.name}: the element kept moving for 10 s; took its box on the page')
        loc.evaluate('e => e.scrollIntoView()'); page.screenshot(path=str(path), clip=loc.bounding_box())


@contextmanager
def notebook_page(server, tmp_path):
    "Chromium with the server's notebook open; yields (page, page errors, requests that left loopback)."
    from playwright.sync_api import sync_playwright
    errors, external = [], []
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path/'profile'), executable_path=CHROMIUM, headless=True,
                                                   args=CHROME_ARGS, viewport={'width': 1400, 'height': 2400},
                                                   env=dict(os.environ, HOME=str(tmp_path)))  # crashpad writes under $HOME
        page = ctx.pages[0]
        page.on('pageerror', lambda e: errors.append(e.stack or str(e)))
        ctx.on('request', lambda r: r.url.startswith(('http://127.0.0.1', 'blob:', 'data:')) or external.append(r.url))
        page.goto(server['url'])
        try: yield page, errors, external
        finally: ctx.close()
    if server['app'] == 'notebook':  # Notebook 7.6.5 throws this on every page, /tree included (shared/browser/README.md)
        errors[:] = [e for e in errors if "reading 'schema'" not in e]


def run_all(page, mark=lambda name: None):
    "Wait for the kernel and run all cells; returns the panel's locator once it is visible."
    out = page.locator('.jp-Notebook .jp-Cell').nth(3).locator('.jp-OutputArea')
    ui = out.locator('.ftnb-panel')
    for attempt in (1, 2):
        if attempt == 2: page.reload()
        page.wait_for_function(KERNEL_READY, timeout=60_000); mark(f'kernel ready ({attempt})')
        page.evaluate("() => { window.ranAll = undefined; window.jupyterapp.commands"
                      ".execute('notebook:run-all-cells').then(r => window.ranAll = r); }")
        page.wait_for_function('() => window.ranAll !== undefined', timeout=120_000); mark(f'run-all done ({attempt})')
        try: ui.wait_for(state='visible', timeout=30_000); break
        except Exception:
            # Seen once under load in CI: "Error displaying widget: model not found" (the view arrived before its
            # model). Reloading the page and running all again is what a user would do; a second failure fails.
            if attempt == 2 or 'model not found' not in out.inner_text(): raise
            mark('widget model not found: reload and run all again')
    return ui


PAIRS = [dict(app=a, mode=m) for a in ('lab', 'notebook') for m in ('widget', 'handle')]

@pytest.mark.parametrize('server', PAIRS, indirect=True, ids=[f"{'lab' if p['app'] == 'lab' else 'notebook7'}-{p['mode']}" for p in PAIRS])
def test_panel_trains_and_stops(server, tmp_path):
    from playwright.sync_api import expect
    shots, mode, name = HERE/'screenshots', server['mode'], server['name']
    shots.mkdir(exist_ok=True)
    t, marks = server['t0'], {}
    def mark(what): marks[what] = round(time.time() - t, 1)
    def shot(loc, what):
        f = f'{name}_{what}.png'; screenshot(page, loc, shots/f); shutil.copy(shots/f, tmp_path/f)
    with notebook_page(server, tmp_path) as (page, errors, external):
        ui = run_all(page, mark)
        assert page.evaluate('window.ranAll') is True
        cells = page.locator('.jp-Notebook .jp-Cell')
        out = cells.nth(3).locator('.jp-OutputArea')

        # the panels rendered, with the schema's widgets, the discovered layers and the dataset preview
        expect(ui).to_be_visible(timeout=30_000)
        assert 'Loading widget' not in out.inner_text() and 'Error' not in out.inner_text()
        for title in ('Dataset', 'Model & adapter', 'Method', 'Training', 'Acceleration', 'Export'):
            expect(ui.locator('.lm-TabBar-tab', has_text=title)).to_have_count(1)
        expect(ui.locator('.ftnb-check')).to_contain_text('config valid')
        expect(ui.get_by_text('format: ')).to_be_visible()
        expect(ui.locator('.ftnb-data-path input')).to_have_value('toy:addition')
        expect(ui.locator('.ftnb-summary')).to_be_hidden()  # folded only while a run goes
        shot(ui, 'panel_dataset')

        # change a field in the browser; the kernel's config follows
        ui.locator('.lm-TabBar-tab', has_text='Model & adapter').click()
        r = ui.locator('.ftnb-adapter-r input')
        expect(r).to_have_value('4')
        r.fill('9'); r.press('Enter')
        expect(ui.locator('.ftnb-yaml textarea')).to_have_value(re.compile(r'\n  r: 9\n'))
        assert ui.locator('.ftnb-adapter-alora_invocation').count() == 0 or not ui.locator('.ftnb-adapter-alora_invocation').is_visible()
        expect(ui.locator('label', has_text='q_proj')).to_be_visible()  # discovered layer checkboxes
        shot(ui, 'panel_adapter')
        assert page.evaluate(RUN_CELL, 4) is True
        expect(cells.nth(4).locator('.jp-OutputArea')).to_contain_text('r=9 running=False')
        # an invalid combination shows its error by the field and disables Train; putting it back enables Train
        ui.locator('.ftnb-adapter-method select').select_option('alora')
        expect(ui.locator('.ftnb-check')).to_contain_text('aLoRA needs an invocation string')
        expect(ui.locator('button.ftnb-train')).to_be_disabled()
        ui.locator('.ftnb-adapter-method select').select_option('lora')
        expect(ui.locator('button.ftnb-train')).to_be_enabled()
        # GRPO's settings appear only for GRPO: rewards with weights, group size, lengths, the engine
        ui.locator('.lm-TabBar-tab', has_text='Method').click()
        expect(ui.locator('.ftnb-method-rewards')).to_be_hidden()
        ui.locator('.ftnb-method-name select').select_option('grpo')
        expect(ui.locator('.ftnb-method-rewards')).to_be_visible()
        expect(ui.locator('.ftnb-method-sleep_level select')).to_be_visible()
        expect(ui.locator('.ftnb-check')).to_contain_text('GRPO needs whole groups')  # batch 4, 8 completions per prompt
        expect(ui.locator('.lm-TabBar-tab', has_text='Training ⚠')).to_have_count(1)
        expect(ui.locator('button.ftnb-train')).to_be_disabled()
        shot(ui, 'panel_method_grpo')
        ui.locator('.ftnb-method-name select').select_option('sft')
        expect(ui.locator('button.ftnb-train')).to_be_enabled()
        mark('fields checked')

        check_rollout_browser(page, cells.nth(5).locator('.jp-OutputArea'), mode, shot); mark('rollout browser checked')

        # train: the live dashboard draws points while the kernel stays responsive; the tabs fold into one line
        ui.locator('.lm-TabBar-tab', has_text='Training').click()
        ui.locator('button.ftnb-train').click(); mark('train clicked')
        page.wait_for_function(f'() => ({POINTS})({json.dumps(PLOTS[mode])}) >= 2', timeout=120_000); mark('2 points drawn')
        t1 = time.time()
        assert page.evaluate(RUN_CELL, 4) is True
        expect(cells.nth(4).locator('.jp-OutputArea')).to_contain_text('running=True')
        marks['probe cell during training (s)'] = round(time.time() - t1, 2)
        expect(ui.locator('.ftnb-summary')).to_be_visible()
        expect(ui.locator('.ftnb-summary')).to_contain_text('training: sft · lora r9')  # the config being trained, r as edited
        expect(ui.locator('.lm-TabBar-tab', has_text='Dataset')).to_be_hidden()
        expect(ui.locator('.ftnb-progress')).to_contain_text('steps/s')
        live = ui.locator('.ftnb-live')
        expect(live.locator('.ftnb-headline')).to_contain_text('step')
        expect(live.locator('.ftnb-dash-status')).to_contain_text('running, step')
        expect(live.locator('.ftnb-hints')).to_have_count(1)
        plots = live.locator('.js-plotly-plot')
        expect(plots).to_have_count(1)  # one grid figure in either mode, not a figure per view
        views = plots.evaluate('g => g.layout.meta.ftnb_views')
        assert 'loss' in views and 'memory' not in views, views  # no empty GPU-memory panel on a CPU
        width, room = plots.evaluate('g => g._fullLayout.width'), live.evaluate('e => e.clientWidth')
        assert width >= 0.9 * room, (width, room)  # the grid as wide as the cell (the widget once drew at plotly's 700 px default)
        if mode == 'handle':  # the status, hints and grid are in the Output widget the run mirrors into
            expect(live.locator('.widget-output .ftnb-headline')).to_have_count(1)
        shot(ui, 'training')

        # stop: the trainer saves a checkpoint, the panel says how to resume, and the tabs open again
        mark('stop to click'); ui.locator('button.ftnb-stop').click(); mark('stop clicked')
        expect(ui.locator('.ftnb-status')).to_contain_text(re.compile('stopping|stopped at step'), timeout=60_000); mark('stop seen')
        expect(ui.locator('.ftnb-status')).to_contain_text('stopped at step', timeout=60_000); mark('stopped')
        expect(ui.locator('button.ftnb-train')).to_be_enabled()
        ckpts = sorted(server['runs'].glob('checkpoint-*'))
        assert ckpts and (ckpts[-1]/'trainer_state.json').exists(), list(server['runs'].iterdir())
        expect(ui.locator('.ftnb-summary')).to_be_hidden()
        expect(ui.locator('.lm-TabBar-tab', has_text='Dataset')).to_be_visible()
        expect(live.locator('.ftnb-headline')).to_contain_text('step')
        marks['points at stop'] = page.evaluate(POINTS, PLOTS[mode])
        shot(ui, 'stopped')
        page.screenshot(path=str(shots/f'{name}_page.png'), full_page=True)
    assert not errors and not external, (errors, external)
    print(f'\nbrowser test timings, {name} (s since server start):', marks)


def check_rollout_browser(page, out, mode:str, shot):
    "`open_run` of a recorded GRPO run: groups by prompt, 2 a page; next shows page 2; the step slider picks a step."
    from playwright.sync_api import expect
    ro = out.locator('.ftnb-rollouts')
    expect(ro).to_be_visible(timeout=30_000)
    # Notebook 7 puts an output taller than the window (this one is ~3,500 px: the run's figures, then the browser) in a
    # ~300 px scroll box; the checks pass either way, but the screenshots would show a slice: open it out
    page.evaluate("() => { const nb = window.jupyterapp.shell.currentWidget; nb.content.activeCellIndex = 5;"
                  " return window.jupyterapp.commands.execute('notebook:disable-output-scrolling'); }")
    expect(out.locator('.js-plotly-plot').first).to_be_visible()  # the run's figures are drawn beside the browser
    groups, summary, pages = ro.locator('.ftnb-rollouts-group'), ro.locator('.ftnb-rollouts-summary'), ro.locator('.ftnb-rollouts-page')
    expect(summary).to_contain_text('step 12 · prompts 1-2 of 4 · 16 completions')  # the newest step first
    expect(groups).to_have_count(2)
    for i in range(2):
        g = groups.nth(i)
        expect(g.locator('.ftnb-rollouts-prompt')).not_to_be_empty()
        expect(g.locator('.ftnb-rollouts-stats')).to_contain_text('4 completions · reward mean')
        expect(g.locator('.ftnb-rollouts-completions tbody tr')).to_have_count(4)
        expect(g.locator('.ftnb-rollouts-completions thead')).to_contain_text('advantage')
    expect(pages).to_have_text('page 1 of 2')
    first = ro.locator('.ftnb-rollouts-prompt').all_inner_texts()
    shot(out.locator('.js-plotly-plot').first, 'open_run_figure'); shot(ro, 'rollouts_page1')
    ro.locator('.ftnb-rollouts-next').click()
    expect(pages).to_have_text('page 2 of 2')
    expect(summary).to_contain_text('step 12 · prompts 3-4 of 4')
    expect(groups).to_have_count(2)
    assert not set(ro.locator('.ftnb-rollouts-prompt').all_inner_texts()) & set(first)  # other prompts on page 2
    expect(ro.locator('.ftnb-rollouts-next')).to_be_disabled()
    shot(ro, 'rollouts_page2')
    # the step slider: type into its readout (ArrowRight on the handle does nothing in Notebook 7: shared/browser/README.md)
    ro.locator('.ftnb-rollouts-step .widget-readout').click()
    page.keyboard.press('Control+A'); page.keyboard.type('5'); page.keyboard.press('Enter')
    expect(summary).to_contain_text('step 5 · prompts 1-2 of 4')  # a new step starts at page 1
    expect(pages).to_have_text('page 1 of 2')
    shot(ro, 'rollouts_step5')


@pytest.mark.parametrize('server', [dict(app='lab', mode='widget', negative=True), dict(app='notebook', mode='handle', negative=True)],
                         indirect=True, ids=['lab-widget', 'notebook7-handle'])
def test_negative_control_a_dashboard_that_never_draws_fails_the_check(server, tmp_path):
    "The same notebook with Dashboard.update and flush made no-ops: training runs, and the points check finds nothing."
    from playwright.sync_api import expect
    with notebook_page(server, tmp_path) as (page, errors, external):
        ui = run_all(page)
        ui.locator('button.ftnb-train').click()
        expect(ui.locator('.ftnb-progress')).to_contain_text('steps/s', timeout=60_000)  # the run itself goes on
        page.wait_for_timeout(5_000)
        assert page.evaluate(POINTS, PLOTS[server['mode']]) == 0   # ...but the check the real test relies on sees no points
        ui.locator('button.ftnb-stop').click()
        expect(ui.locator('.ftnb-status')).to_contain_text('stopped at step', timeout=60_000)


FAILED = re.compile('Loading widget|model not found')  # @jupyter-widgets/jupyterlab-manager 8: a view whose model it lacks

# what cell 3's output shows, each change recorded in the page every 100 ms (the failed state lasts seconds, but a busy
# page can answer Playwright's polls too late to see it)
WATCH = """() => { window.ftnbSeen = []; setInterval(() => {
  const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[3], o = c && c.querySelector('.jp-OutputArea');
  if (!o) return;
  const m = /Loading widget|model not found/.exec(o.innerText), k = m ? m[0] : o.querySelector('.ftnb-panel') ? 'panel' : null;
  if (k && window.ftnbSeen[window.ftnbSeen.length - 1] !== k) window.ftnbSeen.push(k);
}, 100); }"""

@pytest.mark.parametrize('server', [dict(app=a, nb='rerender.ipynb') for a in ('lab', 'notebook')], indirect=True, ids=['lab', 'notebook7'])
def test_panel_recovers_from_a_missing_model(server, tmp_path):
    """tests/browser/rerender.ipynb: a panel whose first showing is a view of a model that does not exist. The front end
    says so: "Loading widget..." until its widget manager has restored (then "Error displaying widget: model not found",
    as seen in CI); no view is acknowledged, so ftnb shows the panel again through the same display handle, and the real
    panel replaces the message. The control cell (retries=0) keeps its message. The eager cell (wait=0.5 s) re-shows a
    widget that was drawn fine: it must stay on screen (closing the old wrapper once hid the whole output)."""
    from playwright.sync_api import expect
    shots, name, t0 = HERE/'screenshots', f"{server['app']}-rerender", time.time()
    shots.mkdir(exist_ok=True)
    def shot(loc, what):
        f = f'{name}_{what}.png'; screenshot(page, loc, shots/f); shutil.copy(shots/f, tmp_path/f)
    with notebook_page(server, tmp_path) as (page, errors, external):
        page.wait_for_function(KERNEL_READY, timeout=60_000)
        page.evaluate(WATCH)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        cells = page.locator('.jp-Notebook .jp-Cell')
        control, out, probe = (cells.nth(i).locator('.jp-OutputArea') for i in (2, 3, 5))
        panel = out.locator('.ftnb-panel')
        try: expect(panel).to_be_visible(timeout=90_000); t_ok = time.time() - t0  # re-shown after 6 s of an idle kernel
        except AssertionError:  # what the kernel saw: re-shows and acknowledged views
            page.evaluate(RUN_CELL, 5); page.wait_for_timeout(2_000)
            raise AssertionError(f'no panel; the output says {out.inner_text()[:200]!r}; the kernel: {probe.inner_text()!r}') from None
        # Under load the first showing's late failure can wipe a panel drawn meanwhile (seen in CI: the output went back to the
        # message after the panel); that view is never acknowledged, so ftnb shows the panel again (up to 3 tries, 6 s, 12 s, 24 s)
        expect(out).not_to_contain_text(FAILED, timeout=60_000); expect(out).not_to_contain_text('Error')
        expect(panel).to_be_visible()
        seen = page.evaluate('window.ftnbSeen')
        assert len(seen) >= 2 and FAILED.fullmatch(seen[0]) and seen[-1] == 'panel', seen  # first the front end's message, then the panel
        expect(panel.locator('.lm-TabBar-tab', has_text='Dataset')).to_have_count(1)
        expect(panel.locator('.ftnb-check')).to_contain_text('config valid')
        expect(out.locator('.ftnb-shown')).to_have_count(1)  # one wrapper: the failed showing was replaced, not added to
        shot(cells.nth(3), 'recovered')
        # the control, never re-shown, still shows the message: the front end does not recover by itself
        expect(control).to_contain_text(FAILED); assert control.locator('.ftnb-panel').count() == 0
        shot(cells.nth(2), 'control')
        # the eager widget, re-shown while it was on screen, is still on screen
        eager = cells.nth(4).locator('.jp-OutputArea')
        expect(eager.locator('.ftnb-eager')).to_be_visible(); expect(eager).not_to_contain_text(FAILED)
        page.wait_for_timeout(3_000)  # the control gives up 6 s after the kernel went idle; an acknowledgement takes 2.5 s
        assert page.evaluate(RUN_CELL, 5) is True
        expect(probe).to_contain_text(
            re.compile(r'panel tries=[1-3] rendered=[1-9]\d*; control tries=0 rendered=0 gave_up=True; eager tries=[1-3]'))
        expect(eager.locator('.ftnb-eager')).to_be_visible()
        shot(page.locator('.jp-Notebook'), 'page')
    assert not errors and not external, (errors, external)
    print(f'\nre-render, {name}: the output showed {seen}; the panel at {t_ok:.1f} s, test {time.time() - t0:.1f} s')
