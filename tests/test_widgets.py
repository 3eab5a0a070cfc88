"ftnb.widgets headless: every schema field round-trips through its widget, errors land by their field, and a real run stops and resumes."
import html, threading, time
import ipywidgets as W
import pytest
from ftnb.config import ConfigError, RunConfig, field_help, from_dict, to_dict
from ftnb.events import Metrics
from ftnb.widgets import ConfigPanel, _OK, field_kind, field_info, field_paths, to_python, to_yaml


def test_widget_help_is_the_schema_help():
    panel = ConfigPanel(dashboard=None)
    assert set(panel.fields) == set(field_paths())
    for p, fw in panel.fields.items():
        assert fw.help_text == field_help(p) and html.escape(field_help(p)) in fw.help.value, p
        assert fw.input.tooltip == field_help(p) or p == 'method.rewards', p  # the rewards editor is a Box: no tooltip there


def _other_value(path, now):
    "A valid-looking value for `path` that differs from `now`."
    kind, opts, optional = field_kind(field_info(path).annotation)
    if kind == 'choice': return next(o for o in reversed(opts) if o != now)
    if kind == 'bool': return not now
    if kind == 'int': return now + 1 if now and now > 0 else 5  # -1 (e.g. max_steps: use epochs) -> a real count
    if kind == 'float': return round((now or 0.1) / 2, 6) if now else 0.05
    if path == 'data.path': return 'toy:chat'  # the panel checks that a data source exists
    if path == 'data.eval_path': return 'toy:addition_test'
    if kind == 'str': return (now or '') + '_x'
    if kind == 'strlist': return ['q_proj', 'v_proj']
    if path == 'method.rewards': return [{'name': 'exact_answer', 'weight': 2.0}, {'name': 'regex_format', 'weight': 0.5, 'pattern': r'\d+$'}]
    return now


# Each of these, in a config where its change is valid: it round-trips through the panel too (see the test below).
ALONE = {'data.response_template': {'data': {'format': 'text', 'response_template': '### Answer:'}},
         'method.name': {'method': {'name': 'grpo'}},
         'accel.fp8': {'accel': {'fp8': True}}, 'accel.qat': {'accel': {'qat': True}}, 'accel.fsdp': {'accel': {'fsdp': True}},
         'accel.fused_lora': {'accel': {'fused_lora': True}, 'adapter': {'dropout': 0.0}},
         'data.overlap': {'data': {'format': 'text', 'too_long': 'split', 'overlap': 16}}}

# Fields whose changed value the config refuses in the walk below, because of a field changed before them; each
# such check has its own test (tests/test_errors.py). Any other field that fails to change is a failure.
CANNOT_CHANGE_ALONE = {
    'data.response_template': 'applies to the text format, and the walk set data.format to messages',
    'method.name': "GRPO refuses data.packing, which the walk turned on (so the GRPO-only fields after it change under sft)",
    'accel.fp8': 'FP8 cannot be combined with the gptq_lora the walk chose',
    'accel.qat': 'QAT cannot be combined with the gptq_lora the walk chose',
    'accel.fsdp': 'FSDP2 cannot shard the gptq_lora weights the walk chose',
    'accel.fused_lora': 'the fused LoRA ops compute plain LoRA, and the walk chose gptq_lora',
    'data.overlap': "overlap is used only with too_long='split', and the walk chose 'raise' (split refuses the messages format it chose)",
}

def _fp8_here() -> bool:
    "Can this machine train in FP8 (a CUDA GPU of compute capability 8.9+)? The panel refuses accel.fp8 where not."
    import torch
    return torch.cuda.is_available() and torch.cuda.get_device_capability(0) >= (8, 9)

def test_every_field_round_trips_through_the_panel(monkeypatch):
    "Change every field the schema accepts a change of; the panel shows it and gives the same config back."
    monkeypatch.setattr('ftnb.accel.check', lambda cfg: None)  # the schema's round trip, on any machine (FP8, Liger: the test below)
    d, changed, refused = to_dict(RunConfig()), [], []
    for p in field_paths():
        part, name = p.split('.')
        trial = {k: dict(v) for k, v in d.items()}
        trial[part][name] = _other_value(p, d[part][name])
        try: from_dict(trial)
        except ConfigError: refused.append(p); continue  # listed in CANNOT_CHANGE_ALONE, checked below
        d, changed = trial, changed + [p]
    assert set(refused) == set(CANNOT_CHANGE_ALONE), set(refused) ^ set(CANNOT_CHANGE_ALONE)
    assert set(changed) | set(refused) == set(field_paths())
    assert set(ALONE) == set(CANNOT_CHANGE_ALONE)
    for p, change in ALONE.items():  # the refused ones, each where it is valid
        c = RunConfig.model_validate(change)
        part, name = p.split('.')
        assert getattr(getattr(c, part), name) != getattr(getattr(RunConfig(), part), name), p
        panel = ConfigPanel(RunConfig(), dashboard=None).set_config(c)
        assert panel.error is None and panel.config == c, (p, panel.error)
    cfg = from_dict(d)
    panel = ConfigPanel(RunConfig(), dashboard=None).set_config(cfg)
    assert panel.error is None, panel.error
    assert panel.config == cfg
    ns = {}; exec(panel.to_python(), ns)
    assert ns['cfg'] == cfg and from_dict(__import__('yaml').safe_load(panel.to_yaml())) == cfg
    assert to_python(cfg) == panel.to_python() and to_yaml(cfg) == panel.to_yaml()


def test_errors_land_by_their_field_and_block_train():
    panel = ConfigPanel(RunConfig(), dashboard=None)
    cases = [('adapter.method', 'gptq_lora', 'model.dtype'), ('train.batch_size', 0, None), ('data.eval_fraction', 1.0, 'data.eval_fraction'),
             ('data.max_samples', '-3', 'data.max_samples'), ('accel.fp8', True, None if _fp8_here() else 'accel.fp8')]
    for path, value, where in cases:
        panel.set_config(RunConfig())
        panel.fields[path].input.value = value
        if where is None:  # bounded inputs clamp, and lone flags are valid: no error
            assert panel.error is None, (path, panel.error); continue
        assert panel.error is not None and panel.error.field == where, (path, panel.error)
        assert panel.run.train_btn.disabled and panel.fields[where].error.layout.display is None
        assert panel.fields[where].error.value and all(not fw.error.value for p, fw in panel.fields.items() if p != where)
        with pytest.raises(ConfigError): panel.config
    panel.set_config(RunConfig()); assert not panel.run.train_btn.disabled


@pytest.mark.parametrize('path,bad,good', [('data.path', 'data/trian.jsonl', 'toy:addition'), ('data.path', './my_dataset', 'toy:chat'),
                                           ('data.eval_path', 'toy:adition', 'toy:addition_test'), ('model.name_or_path', './models/missing', 'tiny-qwen2')])
def test_panel_checks_paths_before_train(tmp_path, path, bad, good):
    "A mistyped data file or missing model folder is shown once, under its field, and Train is off before it is pressed."
    panel = ConfigPanel(RunConfig(train=dict(output_dir=str(tmp_path))), dashboard=None)
    assert not panel.run.train_btn.disabled and panel.check.value == _OK
    panel.fields[path].input.value = bad
    assert panel.error is not None and panel.error.field == path, panel.error
    assert panel.run.train_btn.disabled
    shown = [p for p, fw in panel.fields.items() if fw.error.value]
    assert shown == [path] and bad in html.unescape(panel.fields[path].error.value)
    assert 'config valid' not in panel.check.value and html.unescape(panel.check.value).count(bad) == 1
    with pytest.raises(ConfigError): panel.config
    panel.run._clicked()  # even a click that slips through starts nothing
    assert not panel.run.running and panel.run.result is None
    panel.fields[path].input.value = good
    assert panel.error is None and not panel.run.train_btn.disabled and panel.check.value == _OK


def test_failure_before_the_first_step_is_shown_once():
    "A run that fails at once says so in the status line only: no live view with a green 'no warnings' beside it."
    def bad_train(cfg, **kw): raise ConfigError('data.path', 'x.jsonl', 'check the path', 'file not found')
    panel = ConfigPanel(RunConfig(), train_fn=bad_train, dashboard='widget')
    panel.train(); assert panel.wait(30)
    assert 'failed: data.path' in panel.run.status.value and panel.run.live.children == ()


def test_background_run_stops_with_checkpoint_and_resumes(tmp_path):
    "The tiny model trains in a thread while this thread keeps working; Stop saves a checkpoint; Resume continues from it."
    pytest.importorskip('ftnb.sft')
    cfg = RunConfig(model=dict(dtype='float32'), data=dict(path='toy:addition', max_length=32, max_samples=128, eval_fraction=0),
                    adapter=dict(r=4, alpha=8), train=dict(output_dir=str(tmp_path), run_name='bg', max_steps=2000, batch_size=4,
                                                           lr=1e-3, logging_steps=2, save_steps=100_000))
    panel = ConfigPanel(cfg, dashboard='widget')
    panel.train()
    ticks, t0 = 0, time.time()
    while not any(isinstance(e, Metrics) and e.step >= 4 for e in panel.run.events):  # this thread stays free meanwhile
        assert panel.run.running and time.time() - t0 < 90, panel.run.status.value
        time.sleep(0.05); ticks += 1
    panel.stop(); assert panel.wait(60)
    res = panel.run.result
    assert res.status == 'stopped' and (tmp_path/'bg'/f'checkpoint-{res.step}'/'trainer_state.json').exists(), panel.run.status.value
    assert 'stopped at step' in panel.run.status.value and 'live view failed' not in panel.run.status.value
    assert panel.run.dashboard is not None and panel.run.dashboard.draws >= 1 and ticks > 0  # this thread ran while training did
    panel.resume.value = True; panel.set('train.max_steps', res.step + 4)
    panel.train(); assert panel.wait(90)
    assert panel.run.error is None, panel.run.error
    assert panel.run.result.status == 'finished' and panel.run.result.step == res.step + 4, panel.run.status.value
    first = min(e.step for e in panel.run.events if isinstance(e, Metrics))
    assert first > res.step  # resumed: no step of the first run was logged again


def test_layer_names_load_no_weights(monkeypatch):
    "The adapter panel's layer list comes from the model's config on the meta device: no weights are read."
    import safetensors.torch, transformers
    from ftnb.widgets import linear_layer_names
    from ftnb.config import ModelCfg
    def boom(*a, **k): raise AssertionError('weights were loaded')
    monkeypatch.setattr(transformers.AutoModelForCausalLM, 'from_pretrained', boom)
    monkeypatch.setattr(safetensors.torch, 'load_file', boom)
    names = linear_layer_names(ModelCfg(name_or_path='tiny-qwen2'))
    assert {'q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'} <= set(names)


def test_acceleration_tab_says_why_a_switch_cannot_run_here(monkeypatch):
    "FP8 and Liger on a machine that cannot run them: the reason shows under the switch, the tab is marked, Train is off."
    from ftnb import accel
    monkeypatch.setattr(accel, '_gpu', lambda: ('Tesla T4', (7, 5)))
    monkeypatch.setattr(accel, 'require', lambda *a, **k: None)  # as if liger-kernel and torchao were installed
    panel = ConfigPanel(RunConfig(), dashboard=None)
    panel.fields['accel.fp8'].input.value = True
    assert panel.error.field == 'accel.fp8' and 'this GPU is Tesla T4, compute capability 7.5' in html.unescape(panel.fields['accel.fp8'].error.value)
    assert panel.run.train_btn.disabled and 'Acceleration ⚠' in panel.tabs.titles
    panel.fields['accel.fp8'].input.value = False
    assert panel.error is None and not panel.run.train_btn.disabled
    monkeypatch.setattr(accel, '_gpu', lambda: None)
    panel.fields['accel.liger'].input.value = True
    assert panel.error.field == 'accel.liger' and 'need a CUDA GPU' in html.unescape(panel.fields['accel.liger'].error.value)
    assert panel.fields['accel.qat_group_size'].box.layout.display == 'none'  # QAT's own settings show only with QAT on
    panel.fields['accel.liger'].input.value = False; panel.fields['accel.qat'].input.value = True
    assert panel.error is None and panel.fields['accel.qat_group_size'].box.layout.display is None


def test_acceleration_tab_greys_what_would_be_refused(monkeypatch):
    "A switch the config checks would refuse with the current config is disabled with its reason; it comes back when the cause goes."
    from ftnb import accel
    monkeypatch.setattr(accel, '_gpu', lambda: ('NVIDIA H200', (9, 0)))
    monkeypatch.setattr(accel, 'require', lambda *a, **k: None)  # as if every extra were installed: only the config checks grey
    panel = ConfigPanel(RunConfig(), dashboard=None)
    acc = {p: fw for p, fw in panel.fields.items() if p.startswith('accel.') and fw.kind == 'bool'}
    greyed = lambda: {p for p, fw in acc.items() if fw.input.disabled}
    assert acc and greyed() == {'accel.fused_lora'}  # the default adapter dropout (0.05): the fused LoRA ops have none
    assert 'Fix: set adapter.dropout=0' in html.unescape(panel.fields['accel.fused_lora'].note.value)
    panel.fields['adapter.dropout'].input.value = 0.0
    assert not any(fw.input.disabled for fw in acc.values()) and all(fw.note.layout.display == 'none' for fw in acc.values())
    panel.fields['adapter.dropout'].input.value = 0.05
    panel.fields['adapter.method'].input.value = 'qlora'
    assert panel.error is None
    assert greyed() == {'accel.fp8', 'accel.qat', 'accel.fsdp', 'accel.fused_lora'}
    assert 'FP8 cannot be combined with weight quantization (qlora)' in html.unescape(panel.fields['accel.fp8'].note.value)
    panel.fields['adapter.method'].input.value = 'lora'
    panel.fields['accel.fp8'].input.value = True
    assert greyed() == {'accel.qat', 'accel.fsdp', 'accel.fused_lora'}  # FP8 itself stays free: it can be turned off
    assert 'both rewrite the linear layers' in html.unescape(panel.fields['accel.qat'].note.value)
    panel.fields['accel.fp8'].input.value = False
    assert greyed() == {'accel.fused_lora'} and panel.config == RunConfig()


def test_acceleration_tab_marks_what_this_machine_cannot_run(monkeypatch):
    "No CUDA and no bitsandbytes: FP8 greyed, the 8-bit optimizers marked with the install hint; the chosen optimizer and the config stay."
    import importlib.util
    from ftnb import accel
    monkeypatch.setattr(accel, '_gpu', lambda: None)
    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'bitsandbytes' else find(name, *a))
    panel = ConfigPanel(RunConfig(), dashboard=None)
    assert panel.fields['accel.fp8'].input.disabled and 'needs a CUDA GPU' in html.unescape(panel.fields['accel.fp8'].note.value)
    opt = panel.fields['accel.optim']
    assert [l for l, _ in opt.input.options] == ['adamw_torch_fused', 'adamw_torch', 'adamw_bnb_8bit ⊘', 'paged_adamw_8bit ⊘']
    assert opt.input.value == 'adamw_torch_fused' and 'needs the optional library bitsandbytes' in html.unescape(opt.note.value)
    opt.input.value = 'adamw_torch'
    assert panel.config.accel.optim == 'adamw_torch' and opt.input.value == 'adamw_torch'
    opt.input.value = 'paged_adamw_8bit'  # chosen anyway (from a YAML, say): the error lands under the field, Train is off
    assert panel.error.field == 'accel.optim' and panel.run.train_btn.disabled
    assert panel.fields['accel.compile_backend'].box.layout.display == 'none'  # torch.compile's settings show only with it on
    panel.fields['accel.optim'].input.value = 'adamw_torch'; panel.fields['accel.torch_compile'].input.value = True
    assert panel.error is None and panel.fields['accel.compile_backend'].box.layout.display is None


def test_handle_mode_panel_shows_what_widget_mode_shows(tmp_path):
    "Handle mode (Colab): the headline, status and hints, all views in widget mode's grid, and the rollout browser; the tabs fold during the run."
    import json, types
    from ftnb.events import Rollouts, RunEnd, RunStart
    seen = {}
    def fake(cfg, queue=None, stop=None, callbacks=()):
        seen['folded'] = panel.tabs.layout.display == 'none' and 'training:' in panel.summary.value
        queue.put(RunStart(run_dir=str(cfg.run_dir), max_steps=3, config={'method': {'name': 'grpo'}}))
        for s in (1, 2, 3): queue.put(Metrics(step=s, time=100.0 + s, values={'reward': 0.1 * s, 'loss': 1.0, 'grad_norm': 0.5}))
        queue.put(Rollouts(step=3, rows=[dict(prompt='1+1=', completion='2', reward=1.0, advantage=0.5)]))
        queue.put(RunEnd(step=3, status='finished'))
        return types.SimpleNamespace(status='finished', step=3, run_dir=cfg.run_dir)
    panel = ConfigPanel(RunConfig(train=dict(output_dir=str(tmp_path))), train_fn=fake, dashboard='handle')
    panel.train(); assert panel.wait(30)
    assert seen['folded'] and panel.tabs.layout.display is None  # folded while it ran, open again after
    outs = panel.run.out.outputs
    side = outs[0]['data']['text/html']
    assert 'ftnb-headline' in side and 'ftnb-dash-status' in side and 'ftnb-hints' in side
    fig = outs[1]['data']['application/vnd.plotly.v1+json']
    assert len(outs) == 2 and fig['layout']['meta']['ftnb_views'] == ['reward', 'loss', 'grad_norm']  # one grid, as in widget mode
    colors = {t['name']: t['line']['color'] for t in fig['data'] if t['type'] == 'scatter' and 'line' in t and 'color' in t['line']}
    from ftnb.viz import color_of
    assert colors['reward'] == color_of('reward') and colors['train loss'] == color_of('train loss')
    assert panel.run.dashboard.browser.widget in panel.run.live.children
    assert panel.run.dashboard.extra_s > 0  # the copy into the Output widget counts as redraw time (Dashboard.interval)


def test_a_saved_notebook_says_what_the_widgets_are():
    "U14: without a kernel (GitHub, the docs site) the panel and the run control read as what they are, not as a widget repr."
    panel = ConfigPanel(RunConfig())
    for w, word in ((panel, 'ftnb config panel'), (panel.run, 'ftnb run control')):
        b = w._repr_mimebundle_()
        assert 'application/vnd.jupyter.widget-view+json' in b and b['text/plain'].startswith(word) and 'VBox' not in b['text/plain'], b


# --- re-render when no view is acknowledged (ftnb.rerender, issue 11 item 3) -----------------------------------------

class _Handle:
    "Stands in for IPython's DisplayHandle: records the model ids it was updated with."
    def __init__(self): self.ids = []
    def update(self, obj, raw=False): self.ids.append(obj['application/vnd.jupyter.widget-view+json']['model_id'])


def _watch(s, seconds:float):
    "Run the watching thread as `show` does, for at most `seconds`; True when it ended by itself."
    t = threading.Thread(target=s._watch, kwargs=dict(poll=0.01), daemon=True); t.start(); t.join(seconds)
    ended = not t.is_alive(); s.done.set(); t.join(1); assert not t.is_alive()
    return ended


def test_no_acknowledgement_reshows_the_same_widget_in_a_fresh_wrapper():
    from ftnb.rerender import Shown
    panel, h = W.Label('panel'), _Handle()
    s = Shown(panel, 'a panel', h, idle=lambda: 10.0, wait=0.05, retries=3)
    first = s.box.model_id
    threading.Timer(0.3, lambda: setattr(s.ack, 'rendered', 1)).start()  # the second view renders (what render() does)
    assert _watch(s, 5)
    assert 1 <= len(h.ids) <= 3 and h.ids[-1] == s.box.model_id != first and not s.gave_up
    assert s.box.children[0] is panel and panel.comm is not None  # the panel itself is shown again, not rebuilt


def test_an_acknowledged_view_is_never_reshown():
    from ftnb.rerender import Shown
    h = _Handle(); s = Shown(W.Label('panel'), 'a panel', h, idle=lambda: 10.0, wait=0.01)
    s.ack.rendered = 1
    assert _watch(s, 2) and h.ids == [] and s.tries == 0


def test_retries_are_bounded_and_the_watch_ends():
    from ftnb.rerender import Shown
    h = _Handle(); s = Shown(W.Label('panel'), 'a panel', h, idle=lambda: 10.0, wait=0.01, retries=3)
    assert _watch(s, 5)  # 0.01 + 0.02 + 0.04 + 0.08 s of waiting, then it gives up by itself
    assert len(h.ids) == 3 and len(set(h.ids)) == 3 and s.gave_up


def test_negative_control_a_busy_kernel_is_not_a_missing_view():
    "The front end's acknowledgement waits while a cell runs: only idle seconds count, so a long cell causes no re-show."
    from ftnb.rerender import Shown
    h = _Handle(); s = Shown(W.Label('panel'), 'a panel', h, idle=lambda: 0.0, wait=0.01, retries=3)
    assert not _watch(s, 0.5)  # still waiting for the kernel to go idle...
    assert h.ids == [] and not s.gave_up  # ...with nothing re-shown, though no view was acknowledged


def test_without_a_kernel_show_displays_once_and_starts_no_thread(monkeypatch):
    import IPython.display
    from ftnb.rerender import show
    shown = []; monkeypatch.setattr(IPython.display, 'display', lambda *a, **kw: shown.append((a, kw)))
    n = threading.active_count()
    panel = ConfigPanel(RunConfig())
    assert show(panel.widget, 'a panel') is None and threading.active_count() == n
    assert len(shown) == 1 and shown[0][0][0]['text/plain'] == 'a panel' and 'display_id' not in shown[0][1]
    assert panel._ipython_display_ is None  # IPython falls back to _repr_mimebundle_ (execnb formats results outside its capture)


def test_front_end_waits_2_s_for_a_missing_model_then_gives_up():
    "The installed @jupyter-widgets front end (JupyterLab, Notebook 7) polls 2 s for a model it lacks, then throws 'widget model not found'."
    import glob, re
    from jupyter_core.paths import jupyter_path
    js = [f for d in jupyter_path('labextensions') for f in glob.glob(f'{d}/@jupyter-widgets/jupyterlab-manager/static/*.js')]
    if not js: pytest.skip('jupyterlab_widgets is not installed')
    text = ''.join(open(f, encoding='utf-8').read() for f in js)
    assert re.search(r'Date\.now\(\)-\w+<2e3.{0,200}?widget model not found', text)  # the wait ftnb's 2.5 s acknowledgement outlasts
    assert 'Loading widget...' in text  # the two texts the browser test looks for; the failure is set as the node's text,
    assert re.search(r'node\.textContent="Error displaying widget: model not found"', text)  # which drops a view drawn there
    assert re.search(r'\.disposed\.connect\(\(\)=>\{this\.hide\(\)', text)  # a disposed view hides its output: old wrappers stay open


def test_comm_messages_wait_while_a_cell_runs():
    "ipykernel handles a front end's comm message after the running cell ends: why ftnb.rerender counts only idle seconds."
    import uuid
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name='python3')
    try:
        kc.execute_interactive("import time, comm\nseen = []\ncomm.get_comm_manager().register_target('probe', lambda c, m: seen.append(time.time()))", timeout=60)
        kc.execute("time.sleep(2); t_end = time.time()")
        time.sleep(0.5)  # the cell is running now
        kc.shell_channel.send(kc.session.msg('comm_open', {'comm_id': uuid.uuid4().hex, 'target_name': 'probe', 'data': {}}))
        out = []
        kc.execute_interactive("print(len(seen), seen[0] >= t_end)", timeout=60,
                               output_hook=lambda m: out.append(m['content'].get('text', '')) if m['msg_type'] == 'stream' else None)
        assert ''.join(out).split() == ['1', 'True'], out
    finally:
        kc.stop_channels(); km.shutdown_kernel(now=True)


def test_execnb_prints_a_display_made_while_formatting_a_result(capsys):
    "execnb (nbdev-test) formats a cell's result again after its capture ends: why ftnb.rerender.watched is None without a kernel."
    from execnb.shell import CaptureShell
    sh = CaptureShell(mpl_format=None)
    try:
        outs = sh.run("""
class A:
    def _ipython_display_(self):
        from IPython.display import display
        display({'text/plain': 'AAA', 'text/html': '<b>a</b>'}, raw=True)
A()""")
    finally: sh.close()
    assert capsys.readouterr().out == 'AAA\n'  # printed to the terminal by the second formatting
    assert [o['data'] for o in outs if o['output_type'] == 'execute_result'] == [{}]  # and an empty result saved


def test_rerender_imports_without_ipywidgets_or_anywidget():
    "RR8: ftnb.rerender (and ftnb.dashboard above it) import where neither ipywidgets nor anywidget is installed."
    import subprocess, sys
    code = "import sys; sys.modules['ipywidgets'] = sys.modules['anywidget'] = None; import ftnb.rerender, ftnb.dashboard"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
