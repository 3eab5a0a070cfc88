"""ftnb's panel and live dashboard in a real browser: JupyterLab on loopback, Debian's headless Chromium via Playwright.

It runs tests/browser/panel.ipynb, checks the panels rendered, edits a field and reads the config back from the
kernel, trains the tiny model until the dashboard has drawn points, checks the kernel still answers, stops, and
finds the checkpoint. Screenshots go to tests/browser/screenshots/ (git-ignored) and to pytest's tmp dir.
Recipe: ../shared/browser/README.md (flags, settings and pitfalls found on this kind of machine)."""
import json, os, re, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

HERE = Path(__file__).parent/'browser'
CHROMIUM = os.environ.get('CHROMIUM') or shutil.which('chromium') or '/usr/bin/chromium'
CHROME_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
               '--disable-background-networking', '--disable-component-update', '--disable-sync']
KERNEL_READY = """() => {  // the toolbar says "idle" while there is still no kernel: wait for a connected, idle one
  const sc = window.jupyterapp?.shell.currentWidget?.sessionContext, k = sc?.session?.kernel;
  return !!(sc?.isReady && !sc.hasNoKernel && k?.connectionStatus === 'connected' && k.status === 'idle');
}"""
RUN_CELL = """async (i) => {  // run cell i and resolve when it is done
  const nb = window.jupyterapp.shell.currentWidget; nb.content.activeCellIndex = i;
  return await window.jupyterapp.commands.execute('notebook:run-cell');
}"""
POINTS = """() => {  // points of the training-loss trace in ftnb's live dashboard, as plotly.js holds them
  const gds = [...document.querySelectorAll('.ftnb-live .ftnb-dashboard .js-plotly-plot')];
  return Math.max(0, ...gds.flatMap(g => (g.data || []).filter(t => t.name === 'train loss').map(t => (t.x || []).length)));
}"""

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(params=[False])
def lab(request, tmp_path):
    "JupyterLab on a free loopback port, with every Jupyter folder inside tmp_path; yields the notebook URL."
    if not Path(CHROMIUM).exists(): pytest.skip(f'chromium is not installed ({CHROMIUM}); CI installs it with apt-get')
    root = tmp_path/'root'; root.mkdir()
    shutil.copy(HERE/'panel.ipynb', root/'panel.ipynb')
    (tmp_path/'overrides.json').write_text(json.dumps(  # no "fetch Jupyter news?" toast
        {'@jupyterlab/apputils-extension:notification': {'fetchNews': 'false', 'checkForUpdates': False}}))
    port = free_port()
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', '--ServerApp.port_retries=0',
           '--ServerApp.ip=127.0.0.1', '--IdentityProvider.token=test', f'--ServerApp.root_dir={root}',
           '--LabApp.expose_app_in_browser=True', f'--LabApp.user_settings_dir={tmp_path/"us"}',
           f'--LabApp.workspaces_dir={tmp_path/"ws"}', f'--LabApp.app_settings_dir={tmp_path}', '--LabApp.news_url=None',
           '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate', '--LabApp.extension_manager=readonly',
           '--ServerApp.jpserver_extensions', 'jupyter_lsp=False']  # jupyter_lsp runs `npm prefix -g` at start
    if os.geteuid() == 0: cmd.append('--allow-root')
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path/'jc'), JUPYTER_DATA_DIR=str(tmp_path/'jd'),
               JUPYTER_RUNTIME_DIR=str(tmp_path/'rt'), IPYTHONDIR=str(tmp_path/'ipy'), FTNB_BROWSER_RUNS=str(tmp_path/'runs'),
               HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', TRANSFORMERS_OFFLINE='1', TOKENIZERS_PARALLELISM='false',
               **({'FTNB_BROWSER_NEGATIVE': '1'} if request.param else {}))  # the negative control's dashboard never draws
    t0, log = time.time(), open(tmp_path/'server.log', 'w')
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(120):
            assert proc.poll() is None, (tmp_path/'server.log').read_text()[-3000:]
            try: urllib.request.urlopen(f'http://127.0.0.1:{port}/api/status?token=test', timeout=1); break
            except OSError: time.sleep(0.5)
        else: pytest.fail('JupyterLab did not answer in 60 s')
        yield dict(t0=t0, url=f'http://127.0.0.1:{port}/lab/tree/panel.ipynb?token=test', runs=tmp_path/'runs'/'browser')
    finally:
        proc.terminate()  # SIGTERM: the server shuts the kernel (and its training thread) down, then exits
        try: proc.wait(30)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        log.close()


def test_panel_trains_and_stops_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright
    shots = HERE/'screenshots'; shots.mkdir(exist_ok=True)
    t, marks = lab['t0'], {}
    def mark(name): marks[name] = round(time.time() - t, 1)
    def shot(loc, name):
        loc.screenshot(path=str(shots/f'{name}.png')); shutil.copy(shots/f'{name}.png', tmp_path/f'{name}.png')
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path/'profile'), executable_path=CHROMIUM, headless=True,
                                                   args=CHROME_ARGS, viewport={'width': 1400, 'height': 2400},
                                                   env=dict(os.environ, HOME=str(tmp_path)))  # crashpad writes under $HOME
        page, errors, external = ctx.pages[0], [], []
        page.on('pageerror', lambda e: errors.append(e.stack or str(e)))
        ctx.on('request', lambda r: r.url.startswith(('http://127.0.0.1', 'blob:', 'data:')) or external.append(r.url))
        cells = page.locator('.jp-Notebook .jp-Cell')
        out = cells.nth(3).locator('.jp-OutputArea')
        ui = out.locator('.ftnb-panel')
        for attempt in (1, 2):
            if attempt == 1: page.goto(lab['url'])
            else: page.reload()
            page.wait_for_function(KERNEL_READY, timeout=60_000); mark(f'kernel ready ({attempt})')
            page.evaluate("() => { window.ranAll = undefined; window.jupyterapp.commands"
                          ".execute('notebook:run-all-cells').then(r => window.ranAll = r); }")
            page.wait_for_function('() => window.ranAll !== undefined', timeout=120_000); mark(f'run-all done ({attempt})')
            assert page.evaluate('window.ranAll') is True
            try: ui.wait_for(state='visible', timeout=30_000); break
            except Exception:
                # Seen once under load in CI: "Error displaying widget: model not found" (the view arrived before its
                # model). Reloading the page and running all again is what a user would do; a second failure fails.
                if attempt == 2 or 'model not found' not in out.inner_text(): raise
                mark('widget model not found: reload and run all again')

        # the panels rendered, with the schema's widgets, the discovered layers and the dataset preview
        expect(ui).to_be_visible(timeout=30_000)
        assert 'Loading widget' not in out.inner_text() and 'Error' not in out.inner_text()
        for title in ('Dataset', 'Model & adapter', 'Method', 'Training', 'Acceleration', 'Export'):
            expect(ui.locator('.lm-TabBar-tab', has_text=title)).to_have_count(1)
        expect(ui.locator('.ftnb-check')).to_contain_text('config valid')
        expect(ui.get_by_text('format: ')).to_be_visible()
        expect(ui.locator('.ftnb-data-path input')).to_have_value('toy:addition')
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

        # train: the live dashboard draws points while the kernel stays responsive
        ui.locator('.lm-TabBar-tab', has_text='Training').click()  # a short tab, so the screenshot shows the plots
        ui.locator('button.ftnb-train').click(); mark('train clicked')
        page.wait_for_function(f'() => ({POINTS})() >= 2', timeout=120_000); mark('2 points drawn')
        t1 = time.time()
        assert page.evaluate(RUN_CELL, 4) is True
        expect(cells.nth(4).locator('.jp-OutputArea')).to_contain_text('running=True')
        marks['probe cell during training (s)'] = round(time.time() - t1, 2)
        expect(ui.locator('.ftnb-progress')).to_contain_text('steps/s')
        shot(ui, 'training')

        # stop: the trainer saves a checkpoint, and the panel says how to resume
        ui.locator('button.ftnb-stop').click()
        expect(ui.locator('.ftnb-status')).to_contain_text('stopped at step', timeout=60_000); mark('stopped')
        expect(ui.locator('button.ftnb-train')).to_be_enabled()
        ckpts = sorted(lab['runs'].glob('checkpoint-*'))
        assert ckpts and (ckpts[-1]/'trainer_state.json').exists(), list(lab['runs'].iterdir())
        marks['points at stop'] = page.evaluate(POINTS)
        shot(ui, 'stopped')
        page.screenshot(path=str(shots/'page.png'), full_page=True)
        ctx.close()
    assert not errors and not external, (errors, external)
    print('\nbrowser test timings (s since server start):', marks)


@pytest.mark.parametrize('lab', [True], indirect=True)
def test_negative_control_a_dashboard_that_never_draws_fails_the_check(lab, tmp_path):
    "The same notebook with Dashboard.update and flush made no-ops: training runs, and the points check finds nothing."
    from playwright.sync_api import expect, sync_playwright
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path/'profile'), executable_path=CHROMIUM, headless=True,
                                                   args=CHROME_ARGS, viewport={'width': 1400, 'height': 2400},
                                                   env=dict(os.environ, HOME=str(tmp_path)))
        page = ctx.pages[0]
        page.goto(lab['url']); page.wait_for_function(KERNEL_READY, timeout=60_000)
        page.evaluate("() => { window.ranAll = undefined; window.jupyterapp.commands"
                      ".execute('notebook:run-all-cells').then(r => window.ranAll = r); }")
        page.wait_for_function('() => window.ranAll !== undefined', timeout=120_000)
        ui = page.locator('.jp-Notebook .jp-Cell').nth(3).locator('.jp-OutputArea .ftnb-panel')
        ui.wait_for(state='visible', timeout=60_000)
        ui.locator('button.ftnb-train').click()
        expect(ui.locator('.ftnb-progress')).to_contain_text('steps/s', timeout=60_000)  # the run itself goes on
        page.wait_for_timeout(5_000)
        assert page.evaluate(POINTS) == 0   # ...but the check the real test relies on sees no points
        ui.locator('button.ftnb-stop').click()
        expect(ui.locator('.ftnb-status')).to_contain_text('stopped at step', timeout=60_000)
        ctx.close()
