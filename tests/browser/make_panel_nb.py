"Writes panel.ipynb, the notebook tests/test_browser.py opens in JupyterLab (run it after editing the cells below)."
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
Dash = dashboard_class()
if Dash is None:  # stand-in until ftnb's live Dashboard is installed: one FigureWidget of the loss
    import ipywidgets as W, plotly.graph_objects as go
    class Dash:
        def __init__(self, mode='widget', max_fps=2):
            self.mode, self.fig = 'widget', go.FigureWidget(go.Scatter(x=[], y=[], mode='lines+markers', name='loss'), layout=dict(height=300, width=500, title='loss'))
            self.widget = W.VBox([self.fig])
        def update(self, events):
            pts = [(e.step, e.values['loss']) for e in events if e.kind == 'Metrics' and 'loss' in e.values]
            if pts:
                with self.fig.batch_update():
                    self.fig.data[0].x = list(self.fig.data[0].x or ()) + [s for s, _ in pts]
                    self.fig.data[0].y = list(self.fig.data[0].y or ()) + [v for _, v in pts]
        def flush(self): pass
        def display(self): pass
print(Dash.__module__)'''
PANEL = '''\
panel = ConfigPanel(cfg, dashboard=lambda: Dash(mode='widget', max_fps=2))
panel.discover(); panel.preview()
panel'''
PROBE = "print(f'r={panel.config.adapter.r} running={panel.run.running}')"

nb = new_notebook(cells=[new_markdown_cell('ftnb panel in a real browser (driven by tests/test_browser.py)'),
                         new_code_cell(SETUP), new_code_cell(DASH), new_code_cell(PANEL), new_code_cell(PROBE)],
                  metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
nbformat.write(nb, Path(__file__).with_name('panel.ipynb'))
