"Writes panel.ipynb and rerender.ipynb, the notebooks tests/test_browser.py opens in JupyterLab and Notebook 7 (run it after editing the cells below)."
from pathlib import Path
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

SETUP = '''\
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
from ftnb.config import RunConfig
from ftnb.widgets import ConfigPanel, dashboard_class
cfg = RunConfig(model=dict(dtype='float32'), data=dict(path='toy:addition', max_length=32, max_samples=256, eval_fraction=0),
                adapter=dict(r=4, alpha=8),
                train=dict(output_dir=os.environ.get('FTNB_BROWSER_RUNS', 'runs'), run_name='browser', max_steps=3000,
                           batch_size=4, lr=1e-3, logging_steps=2, save_steps=100_000))'''
DASH = '''\
from ftnb.dashboard import Dashboard as Dash  # ftnb's own live view: no stand-in, so the test fails if it cannot load
assert dashboard_class() is Dash
if os.environ.get('FTNB_BROWSER_NEGATIVE'):  # negative control (tests/test_browser.py): a dashboard that never draws
    Dash.update = lambda self, events: None; Dash.flush = lambda self: None
print(Dash.__module__)'''
PANEL = '''\
MODE = os.environ.get('FTNB_BROWSER_MODE', 'widget')  # 'handle': the Colab fallback, mirrored into an Output widget
panel = ConfigPanel(cfg, dashboard=lambda: Dash(mode=MODE, max_fps=2))
panel.discover(); panel.preview()
panel'''
PROBE = "print(f'r={panel.config.adapter.r} running={panel.run.running}')"
ROLLOUTS = '''\
from ftnb.dashboard import open_run
run = open_run('grpo_cpu_run', mode=MODE)  # tests/fixtures/grpo_cpu_run, copied into the Jupyter root by the test
if run.browser is not None:  # None only in the negative control, whose dashboards never draw
    run.browser.per_page = 2; run.browser.render()  # the run has 4 prompts a step: 2 a page, so that there is a page 2
run'''

nb = new_notebook(cells=[new_markdown_cell('ftnb panel in a real browser (driven by tests/test_browser.py)'),
                         new_code_cell(SETUP), new_code_cell(DASH), new_code_cell(PANEL), new_code_cell(PROBE),
                         new_code_cell(ROLLOUTS)],
                  metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
nbformat.write(nb, Path(__file__).with_name('panel.ipynb'))

# rerender.ipynb: the first showing of a panel fails on purpose (a view of a model that does not exist, through the same
# display handle: ftnb.rerender.show's test-only `first`); ftnb must notice that no view was acknowledged and show the
# panel again. The control cell never re-shows (retries=0): its error must stay. The eager cell re-shows a widget that
# was drawn fine (its wait is shorter than an acknowledgement takes): it must stay on screen.
R_SETUP = """\
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
from ftnb.config import RunConfig
from ftnb.widgets import ConfigPanel
from ftnb.rerender import show
MISSING = {'application/vnd.jupyter.widget-view+json': {'model_id': 'ftnb-no-such-model', 'version_major': 2, 'version_minor': 0},
           'text/plain': 'a view of a widget model that does not exist'}"""
R_CONTROL = "control = show(ConfigPanel(RunConfig()).widget, 'the control panel', retries=0, first=MISSING)  # never re-shown"
R_PANEL = "shown = show(ConfigPanel(RunConfig()).widget, 'the panel', first=MISSING)  # re-shown after 6 s of an idle kernel"
R_EAGER = ("import ipywidgets as W\n"
           "eager = show(W.Label('an eager widget').add_class('ftnb-eager'), 'an eager widget', wait=0.5)  # re-shown before its acknowledgement (2.5 s) can come")
R_PROBE = ("print(f'panel tries={shown.tries} rendered={shown.rendered}; control tries={control.tries} rendered={control.rendered} gave_up={control.gave_up}; '"
           " f'eager tries={eager.tries}')")
nb = new_notebook(cells=[new_markdown_cell('ftnb re-render in a real browser (driven by tests/test_browser.py)'),
                         new_code_cell(R_SETUP), new_code_cell(R_CONTROL), new_code_cell(R_PANEL), new_code_cell(R_EAGER),
                         new_code_cell(R_PROBE)],
                  metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
nbformat.write(nb, Path(__file__).with_name('rerender.ipynb'))
