"Views, hints, rollout table, dashboard (throttle, modes), open_run and the report, on recorded run folders (tests/fixtures)."
import math, re, shutil, subprocess, sys, types
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from ftnb import viz
from ftnb.config import ConfigError
from ftnb.dashboard import (Dashboard, RolloutBrowser, has_figure_widget, open_run, pick_mode, rollout_groups_html, rollout_pages,
                            rollouts_page)
from ftnb.events import Metrics, Rollouts, RunEnd, RunStart, Timeline
from ftnb.viz import (GRPO_VIEWS, SFT_VIEWS, Hint, RunData, figures_of, health, hint_clip, hint_entropy, hint_eval, hint_grad, hint_kl, hint_length, hint_nan, hint_reward_flat,
                      hint_zero_std, load_run, reward_colors, rollout_html, rollout_table, write_report)

FIX = Path(__file__).parent/'fixtures'
SFT, GRPO = FIX/'sft_run', FIX/'grpo_run'
GRPO_CPU = FIX/'grpo_cpu_run'  # a real recorded GRPO run (make_grpo_cpu_fixture.py); grpo_run is synthetic
RUNS = [pytest.param(SFT, id='sft'), pytest.param(GRPO, id='grpo'), pytest.param(GRPO_CPU, id='grpo-cpu-recorded')]

def names(fig, meta=None): return [t.name for t in fig.data if t.meta == meta]

@pytest.fixture(autouse=True)
def _need(request):
    "Skip a test on the SFT fixture until it is recorded (tests/fixtures/make_sft_fixture.py needs ftnb.sft)."
    run = request.node.callspec.params.get('run') if hasattr(request.node, 'callspec') else None
    if run == SFT and not (SFT/'metrics.jsonl').exists(): pytest.skip('tests/fixtures/sft_run not recorded yet')

# --- the fixtures themselves ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('run', RUNS)
def test_fixture_small_and_complete(run):
    files = {p.relative_to(run).as_posix() for p in run.rglob('*') if p.is_file()}
    assert {'config.yaml', 'events.jsonl', 'metrics.jsonl', 'result.json'} <= files
    assert sum((run/f).stat().st_size for f in files) < 200_000

# --- figures from run folders -----------------------------------------------------------------------------------------

def test_sft_figures():
    if not (SFT/'metrics.jsonl').exists(): pytest.skip('tests/fixtures/sft_run not recorded yet')
    d = load_run(SFT); figs = figures_of(d)
    assert list(figs) == ['loss', 'lr', 'grad_norm', 'tokens', 'kl_entropy']  # no GRPO views
    assert names(figs['kl_entropy']) == ['entropy'] and figs['kl_entropy'].data[0].yaxis in (None, 'y')  # no KL: the left axis
    assert names(figs['loss']) == ['train loss (raw)', 'train loss', 'eval loss']
    x, y = figs['loss'].data[0].x, figs['loss'].data[0].y
    assert len(x) >= 10 and list(x) == sorted(x) and y[-1] < y[0]  # it learned
    assert names(figs['lr']) == ['learning rate'] and names(figs['grad_norm']) == ['grad norm']
    tps = figs['tokens'].data[0].y
    assert len(tps) >= 5 and all(v > 0 for v in tps)

def test_grpo_figures():
    d = load_run(GRPO); figs = figures_of(d)
    assert list(figs) == GRPO_VIEWS  # reward views first for a GRPO run
    assert names(figs['reward']) == ['reward ± std', 'reward (raw)', 'reward', 'numeric_answer', 'think_format']
    fn = figs['reward'].data[3]
    assert len(fn.x) == 16 and fn.error_y.array is None  # smoothed lines, no error bars (300 steps of them drew a solid block)
    assert names(figs['kl_entropy']) == ['KL', 'entropy'] and figs['kl_entropy'].data[1].yaxis == 'y2'
    assert names(figs['clip']) == ['clip low', 'clip high', 'clip region', 'zero-std groups']
    assert names(figs['length']) == ['mean', 'min', 'max', 'clipped ratio']
    st = figs['step_time']
    assert names(st) == ['generate', 'sync', 'train', 'sleep', 'wake'] and st.layout.barmode == 'stack'
    assert all(t.type == 'bar' and len(t.x) == 16 for t in st.data)
    total = sum(t.y[0] for t in st.data)
    ph = viz.read_jsonl(GRPO/'timeline.jsonl')[0]['phases']
    assert math.isclose(total, ph[-1]['end'] - ph[0]['start'], rel_tol=1e-6)
    band, mem = figs['memory'].data
    assert (band.name, band.fill, mem.name) == ('engine asleep', 'toself', 'GPU memory (GiB)')
    assert band.x.size == 16*5 and 20 < max(mem.y) < 30 and min(mem.y) < 7  # one band per sleep; awake vs asleep memory

def test_grid_figure_holds_every_view():
    d = load_run(GRPO)
    g = viz.grid_figure(GRPO_VIEWS)
    viz.sync_all(g, {n: viz.VIEWS[n].traces(d) for n in GRPO_VIEWS})
    assert g.layout.meta['ftnb_views'] == GRPO_VIEWS and g.layout.height == 330*math.ceil(len(GRPO_VIEWS)/2) + 60
    for n, f in figures_of(d).items():  # the same traces as the one-view figures, in their subplot
        assert names(g, n) == names(f)
    assert {t.legend for t in g.data if t.meta == 'reward'} == {'legend'} and {t.legend for t in g.data if t.meta == 'clip'} == {'legend3'}

# --- health hints -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('fn,rows,fires', [
    (hint_zero_std, [{'frac_reward_zero_std': 0.95}]*5, True),
    (hint_zero_std, [{'frac_reward_zero_std': 0.95}]*4 + [{'frac_reward_zero_std': 0.2}], False),
    (hint_zero_std, [{'frac_reward_zero_std': 0.95}]*3, False),  # too few logs to say
    (hint_nan, [{'loss': 1.0}, {'loss': float('nan')}], True),
    (hint_nan, [{'loss': 1.0}, {'loss': None}], True),            # NaN as the run log writes it
    (hint_nan, [{'grad_norm': float('inf')}], True),
    (hint_nan, [{'loss': 1.0}]*3, False),
    (hint_grad, [{'grad_norm': 0.5}]*10 + [{'grad_norm': 40.0}], True),
    (hint_grad, [{'grad_norm': 0.5}]*10 + [{'grad_norm': 2.0}], False),
    (hint_grad, [{'grad_norm': 0.5}, {'grad_norm': 40.0}], False),  # not enough history
    (hint_eval, [{'eval_loss': e, 'loss': l} for e, l in [(1.0, 2.0), (1.1, 1.5), (1.2, 1.0), (1.3, 0.5)]], True),
    (hint_eval, [{'eval_loss': e, 'loss': l} for e, l in [(1.3, 2.0), (1.2, 1.5), (1.1, 1.0), (1.0, 0.5)]], False),
    (hint_length, [{'completions/clipped_ratio': 0.5}], True),
    (hint_length, [{'completions/clipped_ratio': 0.1}], False),
    # axolotl's GRPO ranges: entropy 0.05-0.5 (< 0.01 collapse), kl up to 0.5 (> 2.0 diverged), clip region < 0.1 (> 0.3 too far)
    (hint_entropy, [{'entropy': 0.3}] + [{'entropy': 0.005}]*5, True),
    (hint_entropy, [{'entropy': 0.005}]*4 + [{'entropy': 0.02}], False),   # recovered at the last log
    (hint_entropy, [{'entropy': 0.12}]*8, False),                          # healthy
    (hint_kl, [{'kl': 0.2}, {'kl': 2.4}, {'kl': 5.0}], True),
    (hint_kl, [{'kl': 0.2}, {'kl': 5.0}, {'kl': 0.4}], False),             # one spike
    (hint_kl, [{'kl': 0.45}]*6, False),
    (hint_clip, [{'clip_ratio/region_mean': 0.35}]*3, True),
    (hint_clip, [{'clip_ratio/region_mean': 0.35}]*2 + [{'clip_ratio/region_mean': 0.25}], False),
    (hint_clip, [{'clip_ratio/region_mean': 0.02}]*6, False),
    (hint_reward_flat, [{'reward': 0.0}]*25, True),
    (hint_reward_flat, [{'reward': 0.0}]*19 + [{'reward': 0.3}], False),   # it moved
    (hint_reward_flat, [{'reward': 0.0}]*10, False),                       # too early to say
])
def test_hints(fn, rows, fires):
    h = fn(rows)
    assert (h is not None) == fires
    if fires: assert isinstance(h, Hint) and h.level in ('warn', 'error') and len(h.message) > 20

def test_length_hint_needs_a_limit_and_a_climb():
    up = [{'completions/mean_length': l} for l in (40, 48, 55, 59, 62)]
    assert hint_length(up, max_len=64) and not hint_length(up) and not hint_length(up, max_len=256)
    assert not hint_length(up[::-1], max_len=64)

def test_grpo_hints_only_for_grpo():
    "A collapsed entropy is a GRPO warning; an SFT run (TRL's SFTTrainer logs entropy too) stays quiet about it."
    rows = [{'loss': 0.1, 'entropy': 0.001, 'kl': 3.0, 'clip_ratio/region_mean': 0.5}]*5
    assert [h.message.split()[0] for h in health(rows, {'method': {'name': 'grpo'}})] == ['entropy', 'KL', '50%']
    assert health(rows, {'method': {'name': 'sft'}}) == [] and health(rows) == []
    assert len(health([{**r, 'reward': 0.5} for r in rows])) == 3  # no config: a reward column says GRPO

def test_health_on_fixtures():
    d = load_run(GRPO)
    assert [h.message.split()[0] for h in health(d.rows, d.config)] == ['50%']  # completions hit the limit at the end
    assert health(d.rows[:5], d.config) == []

# --- rollout table ----------------------------------------------------------------------------------------------------

@pytest.fixture
def ro(): return viz.read_rollouts(GRPO)

def test_rollout_table_sort_filter(ro):
    t = rollout_table(ro)
    assert len(t) == 8 and list(t.columns[:3]) == ['prompt', 'completion', 'reward'] and 'step' not in t
    assert list(t.columns[3:5]) == ['rewards/numeric_answer', 'rewards/think_format'] and 'advantage' in t
    assert rollout_table(ro, step=1)['prompt'].tolist() == ro[ro.step == 1]['prompt'].tolist()
    s = rollout_table(ro, 3, sort_by='advantage')
    assert s['advantage'].tolist() == sorted(s['advantage'], reverse=True)
    assert rollout_table(ro, 3, sort_by='advantage', ascending=True)['advantage'].tolist() == sorted(s['advantage'])
    p = ro[ro.step == 3]['prompt'].iloc[0]
    f = rollout_table(ro, 3, filter_text=p.upper())
    assert len(f) == 4 and set(f['prompt']) == {p}  # a group of num_generations completions
    assert len(rollout_table(ro, 3, filter_text='[(.*')) == 0  # plain text, not a regex
    with pytest.raises(KeyError, match='not a rollout column'): rollout_table(ro, 3, sort_by='nope')
    assert rollout_table(pd.DataFrame()).empty

def test_rollout_html_escapes():
    df = pd.DataFrame({'step': [1], 'prompt': ['<script>alert(1)</script>'], 'completion': ['a & b'], 'reward': [0.5]})
    h = rollout_html(rollout_table(df))
    assert '<script>alert' not in h and '&lt;script&gt;' in h and 'a &amp; b' in h and '0.500' in h

def test_rollout_browser(ro):
    rb = RolloutBrowser(GRPO)
    assert (rb.step.min, rb.step.max, rb.step.value) == (1, 16, 16)  # a slider over the logged steps, not a 16-entry list
    rb.step.value = 2; rb.sort.value = 'advantage'; rb.descending.value = False
    t = rb.view()[1]
    assert t['advantage'].tolist() == sorted(t['advantage']) and len(t) == 8
    assert rb.pages.value == 'page 1 of 1' and rb.table.value.count("class='ftnb-rollouts-group'") == 2  # 2 prompts x 4
    rb.filter.value = t['prompt'].iloc[0]
    assert 'prompts 1-1 of 1 · 4 of 8 completions match the filter' in rb.table.value and 'ftnb-rollouts' in rb.widget._dom_classes
    rb.filter.value = 'no completion says this'
    assert 'no rollout matches the filter (8 at this step)' in rb.table.value and 'no rollouts yet' not in rb.table.value
    assert 'this run logged no reference answers' in RolloutBrowser(GRPO).table.value  # recorded before ftnb logged them

def rollout_rows(step, prompts=6, gen=4):
    "GRPO-shaped rows: `prompts` groups of `gen` completions, with the reference answer and markup to escape."
    return [{'prompt': f'<p>{step}+{i}=?', 'answer': f'<a>{step+i}', 'completion': f'<script>{step+i+g}</script>', 'reward': float(g == 0),
             'rewards/exact': float(g == 0), 'rewards/fmt': 1.0, 'advantage': 0.75 if g == 0 else -0.25, 'length': 3}
            for i in range(prompts) for g in range(gen)]

def test_rollouts_grouped_by_prompt():
    "One block per prompt: the prompt once (escaped), its reference answer, then its completions with rewards and advantage."
    df = pd.DataFrame(rollout_rows(7))
    h = rollout_groups_html(rollout_table(df, sort_by='reward'), df, per_page=6)
    assert h.count("class='ftnb-rollouts-group'") == 6 and '<script>' not in h and '<p>' not in h and '<a>' not in h
    for i in range(6):
        assert h.count(f'&lt;p&gt;7+{i}=?') == 1                            # each prompt once
        blk = h.split(f'&lt;p&gt;7+{i}=?')[1].split("class='ftnb-rollouts-group'")[0]
        assert f'reference answer</b>: <code>&lt;a&gt;{7+i}</code>' in blk  # its reference answer
        assert [f'&lt;script&gt;{7+i+g}&lt;/script&gt;' in blk for g in range(4)] == [True]*4  # its 4 completions under it
        assert blk.count('+0.750') == 1 and blk.count('-0.250') == 3 and blk.count('<tr><td') == 4
    c = reward_colors(['exact', 'fmt'])
    assert f"<th style='color:{c['rewards/exact']}'>exact</th>" in h and f"<th style='color:{c['reward']}'>reward</th>" in h
    for page, want in ((1, 'prompts 1-4 of 6'), (2, 'prompts 5-6 of 6'), (9, 'prompts 5-6 of 6')):  # 4 per page; a page past the end: the last
        p = rollout_groups_html(rollout_table(df), df, page=page)
        assert want in p and f'page {min(page, 2)} of 2' in p and p.count("class='ftnb-rollouts-group'") == (4 if page == 1 else 2)
    assert rollout_pages(6, 4) == 2 and rollout_pages(8, 4) == 2 and rollout_pages(0, 4) == 1
    with pytest.raises(ConfigError, match='not a page size'): rollout_pages(3, 0)
    none = rollout_groups_html(rollout_table(df, filter_text='zzz'), df)
    assert 'no rollout matches the filter (24 at this step)' in none and 'no rollouts yet' in rollout_groups_html(pd.DataFrame())
    long = rollout_groups_html(pd.DataFrame({'prompt': ['p'], 'completion': ['x' * 50 + '<i>']}), max_chars=10)
    assert "<summary>43 more characters</summary>" in long and 'x' * 40 + '&lt;i&gt;</details>' in long  # the rest, escaped, on a click

def test_rollout_slider_follows_and_snaps():
    "The slider spans the logged steps and follows the newest until the user picks a step; a step without rollouts snaps to one."
    d = RunData()
    for s in (3, 4, 8): d.add(Rollouts(step=s, rows=rollout_rows(s, prompts=2)))
    rb = RolloutBrowser(d, per_page=1)
    assert (rb.step.min, rb.step.max, rb.step.value, rb.pages.value) == (3, 8, 8, 'page 1 of 2')
    rb.next.click(); assert rb.page == 2 and '&lt;p&gt;8+1=?' in rb.table.value
    d.add(Rollouts(step=9, rows=rollout_rows(9, prompts=2))); rb.refresh()
    assert (rb.step.max, rb.step.value, rb.page) == (9, 9, 2)  # following live keeps the page
    rb.step.value = 7
    assert (rb.step.value, rb.page) == (8, 1) and 'step 8 · ' in rb.table.value  # no rollouts at 7: the nearest logged step
    d.add(Rollouts(step=10, rows=rollout_rows(10, prompts=2))); rb.refresh()
    assert (rb.step.max, rb.step.value) == (10, 8)  # the user's step stays

@pytest.mark.parametrize('mode', ['widget', 'handle'])
def test_open_run_rollouts_with_answers(tmp_path, mode, monkeypatch):
    "open_run of a finished run with logged answers: grouped rollouts with their references, widgets or not."
    from ftnb.events import RunLog
    log = RunLog(tmp_path/'run'); log.write(RunStart(max_steps=2))
    for s in (1, 2): log.write(Metrics(step=s, values={'reward': 0.5})); log.write(Rollouts(step=s, rows=rollout_rows(s)))
    log.write(RunEnd(step=2))
    if mode == 'widget':
        b = open_run(tmp_path/'run', mode='widget').browser
        assert (b.step.min, b.step.max, b.step.value, b.pages.value) == (1, 2, 2, 'page 1 of 2')
        assert 'reference answer</b>: <code>&lt;a&gt;2</code>' in b.table.value
        return
    import IPython.display as ipd
    monkeypatch.setitem(sys.modules, 'ipywidgets', None); monkeypatch.setitem(sys.modules, 'anywidget', None)
    shown = []
    monkeypatch.setattr(ipd, 'display', lambda obj, raw=False, display_id=None: shown.append(obj) or types.SimpleNamespace(update=lambda o, raw=False: shown.append(o)))
    dash = open_run(tmp_path/'run', mode='handle'); dash.display()
    h = next(o['text/html'] for o in shown if 'ftnb-rollouts-groups' in str(o))  # drawn at display(): a finished run sends no more updates
    assert dash.browser is None and 'step 2 · prompts 1-4 of 6 · 24 completions · page 1 of 2' in h
    assert 'reference answer</b>: <code>&lt;a&gt;2</code>' in h and '<script>' not in h
    assert '&lt;p&gt;2+5=?' in rollouts_page(dash.data, page=2) and '&lt;p&gt;1+0=?' in rollouts_page(dash.data, step=1)
    figs = [o for o in shown if isinstance(o, dict) and 'application/vnd.plotly.v1+json' in o]
    assert len(figs) == 1 and figs[0]['application/vnd.plotly.v1+json']['layout']['meta']['ftnb_views'] == ['reward']  # one grid, as live

# --- dashboard --------------------------------------------------------------------------------------------------------

def burst(dash, n, dt, t):
    for i in range(n):
        dash.update([Metrics(step=i, values={'loss': 1/(i+1), 'grad_norm': 1.0, 'learning_rate': 1e-3})]); t[0] += dt

@pytest.mark.parametrize('mode', ['widget', 'handle'])
def test_throttle(mode):
    t = [0.0]
    dash = Dashboard(mode=mode, max_fps=2, clock=lambda: t[0], max_overhead=0)
    burst(dash, 200, 0.01, t)          # 200 events in 2 s
    assert dash.draws == 4             # at 0, 0.5, 1.0, 1.5 s
    assert dash.flush() and dash.draws == 5 and not dash.flush()
    assert len(dash.trace('loss', 'train loss').y) == 200
    t[0] += 10; assert not dash.update([])  # nothing new: no redraw
    dash.update([Metrics(step=200, values={'loss': 0.1})]); assert dash.draws == 6

def test_throttle_adapts_to_slow_redraws():
    t = [0.0]
    dash = Dashboard(mode='handle', clock=lambda: t[0], max_overhead=0.02)
    dash.draw_s = 0.05                 # pretend a redraw costs 50 ms: then at most one per 2.5 s
    dash._last = 0.0
    burst(dash, 105, 0.05, t)          # 0 to 5.2 s: redraws at 2.5 and 5.0 s only
    assert dash.draws == 2
    assert dash.interval() < 2.5       # the second redraw was fast (its figures existed): back toward max_fps

def test_pick_mode(monkeypatch):
    assert pick_mode('handle') == 'handle'
    if has_figure_widget(): assert pick_mode('auto') == 'widget'
    monkeypatch.setitem(sys.modules, 'google.colab', types.ModuleType('google.colab'))
    assert pick_mode('auto') == 'handle'
    with pytest.raises(ConfigError, match='not a dashboard mode'): pick_mode('svg')

def test_pick_mode_without_anywidget(monkeypatch):
    monkeypatch.setitem(sys.modules, 'anywidget', None)  # import fails
    assert pick_mode('auto') == 'handle'
    with pytest.raises(ConfigError, match='anywidget'): pick_mode('widget')

def test_widget_mode_one_figure_widget():
    dash = Dashboard(mode='widget')
    dash.update([RunStart(max_steps=5, config={'method': {'name': 'grpo'}})])
    g = dash.figure
    import torch
    exp = [v for v in GRPO_VIEWS if v != 'memory' or torch.cuda.is_available()]  # no empty GPU panel without CUDA
    assert isinstance(g, go.FigureWidget) and g.layout.meta['ftnb_views'] == exp  # expected views, one widget
    for s in range(1, 4):
        dash.update([Timeline(step=s, phases=[{'name': 'generate', 'start': s, 'end': s+0.5, 'mem_gib': 20.0}]),
                     Metrics(step=s, values={'reward': 0.1*s, 'reward_std': 0.1, 'kl': 0.01*s, 'loss': 1.0})])
    dash.flush()
    assert list(dash.trace('reward', 'reward (raw)').y) == pytest.approx([0.1, 0.2, 0.3])
    assert list(dash.trace('reward', 'reward').y) == pytest.approx(viz.smooth([0.1, 0.2, 0.3]))
    assert list(dash.trace('step_time', 'generate').y) == [0.5]*3
    assert set(dash.figs) == set(GRPO_VIEWS) and all(f is dash.figure for f in dash.figs.values())  # memory came with its data
    assert dash.figure in dash.widget.children and 'ftnb-dash-figure' in dash.figure._dom_classes

def test_widget_mode_rebuilds_for_an_unexpected_view():
    dash = Dashboard(mode='widget')   # no RunStart config: views come as their data does
    dash.update(Metrics(step=1, values={'loss': 1.0})); g = dash.figure
    assert g.layout.meta['ftnb_views'] == ['loss']
    dash.update(Metrics(step=2, values={'loss': 0.9, 'grad_norm': 2.0})); dash.flush()
    assert dash.figure is not g and dash.figure.layout.meta['ftnb_views'] == ['loss', 'grad_norm']
    assert list(dash.trace('loss', 'train loss (raw)').y) == [1.0, 0.9]

def test_handle_mode_display(monkeypatch):
    import IPython.display as ipd
    sent = []
    class Handle:
        def __init__(self, obj): sent.append(('display', obj))
        def update(self, obj, raw=False): sent.append(('update', obj))
    monkeypatch.setattr(ipd, 'display', lambda obj, raw=False, display_id=None: Handle(obj))
    t = [0.0]
    dash = Dashboard(mode='handle', views=SFT_VIEWS, clock=lambda: t[0])
    dash.display()
    assert [k for k, _ in sent] == ['display']*7 and sorted(dash._handles) == sorted(SFT_VIEWS + ['side', 'rollouts'])
    sent.clear(); dash.update(Metrics(step=1, values={'loss': 2.0}))
    assert sent[0] == ('update', {'text/plain': 'loss'}) and 'application/vnd.plotly.v1+json' in sent[1][1]
    assert any('ftnb-hints' in str(o) for _, o in sent)
    with pytest.raises(ConfigError, match='widget box'): dash.widget

# --- finished and interrupted runs ------------------------------------------------------------------------------------

@pytest.mark.parametrize('run', RUNS)
@pytest.mark.parametrize('mode', ['widget', 'handle'])
def test_open_run(run, mode):
    dash = open_run(run, mode=mode)
    assert dash.draws == 1 and set(dash.figs) == set(figures_of(load_run(run)))
    assert 'finished at step' in dash.side_html()
    if run == GRPO: assert (dash.browser.step.min, dash.browser.step.max, dash.browser.step.value) == (1, 16, 16) and len(dash.browser.view()[1]) == 8
    assert not hasattr(viz, 'open_run')  # viz sits under dashboard and never imports it

def interrupted(src, dst):
    "A copy of a run folder as a crash leaves it: no end, half-written last lines, a torn rollout file."
    shutil.copytree(src, dst)
    (dst/'result.json').unlink()
    ev = [l for l in (dst/'events.jsonl').read_text().splitlines() if '"RunEnd"' not in l]
    (dst/'events.jsonl').write_text('\n'.join(ev) + '\n{"kind": "Metr')
    m = (dst/'metrics.jsonl').read_text().splitlines()
    (dst/'metrics.jsonl').write_text('\n'.join(m[:-1]) + '\n' + m[-1][:25])
    if (dst/'timeline.jsonl').exists():
        (dst/'timeline.jsonl').write_text((dst/'timeline.jsonl').read_text()[:-40])
    rs = sorted((dst/'rollouts').glob('*.parquet')) if (dst/'rollouts').exists() else []
    if rs: rs[-1].write_bytes(rs[-1].read_bytes()[:300])
    return dst, len(m) - 1

@pytest.mark.parametrize('run', RUNS)
def test_open_run_interrupted(run, tmp_path):
    d, n = interrupted(run, tmp_path/'run')
    data = load_run(d)
    assert len(data.rows) == n and data.status is None
    dash = open_run(d, mode='handle')
    assert 'no end recorded' in dash.side_html() and dash.figs
    if run == GRPO:
        assert len(data.timeline) == 15 and data.rollouts_at(16).empty and len(data.rollouts_at(15)) == 8
    p = write_report(d)
    assert 'no end recorded (running, or interrupted)' in p.read_text()

# --- the report -------------------------------------------------------------------------------------------------------

def check_report(txt):
    assert txt.count('plotly.js v') == 1                       # plotly.js embedded once
    assert not re.search(r'<script[^>]+src=["\']?(https?:)?//', txt)  # nothing loaded from the network
    assert '<h2>Config</h2>' in txt and 'class=\'ftnb-status\'' in txt

@pytest.mark.parametrize('run', RUNS)
def test_report(run, tmp_path):
    d = shutil.copytree(run, tmp_path/run.name)
    txt = write_report(d).read_text(); check_report(txt)
    views = figures_of(load_run(d))
    assert txt.count("class='ftnb-fig'") == len(views)
    assert 'finished at step' in txt
    if run == GRPO: assert 'Rollouts of step 16' in txt and 'What is' in txt and 'max_completion_length' in txt
    if run == GRPO_CPU: assert 'Rollouts of step 12' in txt and 'rewards/exact_answer' in txt

@pytest.mark.parametrize('run', RUNS)
def test_cli_report(run, tmp_path):
    d = shutil.copytree(run, tmp_path/run.name)
    r = subprocess.run([sys.executable, '-c', 'from ftnb.cli import main; main()', 'report', str(d)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip().splitlines()[-1]) == d/'report.html'
    check_report((d/'report.html').read_text())

def test_without_ipywidgets(monkeypatch):
    "Handle mode needs neither ipywidgets nor anywidget: the rollouts of the last step show as an HTML table."
    import IPython.display as ipd
    monkeypatch.setitem(sys.modules, 'ipywidgets', None); monkeypatch.setitem(sys.modules, 'anywidget', None)
    sent = []
    class Handle:
        def __init__(self, obj): pass
        def update(self, obj, raw=False): sent.append(obj)
    monkeypatch.setattr(ipd, 'display', lambda obj, raw=False, display_id=None: Handle(obj))
    dash = Dashboard(views=['reward'])
    assert dash.mode == 'handle'
    dash.display()
    dash.update([Rollouts(step=1, rows=[{'prompt': 'p<', 'completion': 'c', 'reward': 1.0}]), Metrics(step=1, values={'reward': 1.0})])
    h = next(o['text/html'] for o in sent if isinstance(o, dict) and 'p&lt;' in o.get('text/html', ''))
    assert dash.browser is None and 'step 1 · prompts 1-1 of 1 · 1 completion · page 1 of 1' in h  # the grouped page, as HTML

# --- a real crash: kill -9 a training process ------------------------------------------------------------------------

KILLED_CHILD = r'''
import sys, ftnb
from transformers import TrainerCallback
from ftnb.config import RunConfig
class Said(TrainerCallback):  # at step k+1's start, step k's log has been written by ftnb's callback (it runs last)
    def on_step_begin(self, args, state, control, **kw): print('logged', state.global_step, flush=True)
cfg = RunConfig.model_validate({'model': {'dtype': 'float32'}, 'data': {'path': 'toy:addition', 'max_length': 32},
    'train': {'output_dir': sys.argv[1], 'run_name': 'killed', 'max_steps': 100000, 'batch_size': 4, 'logging_steps': 1,
              'save_steps': 100000}})
ftnb.train(cfg, callbacks=[Said()])
'''

def test_kill_9_loses_nothing_already_logged(tmp_path):
    "SIGKILL a real run mid-training: every step it had logged is in the folder, and it opens and reports as interrupted."
    import os, signal
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1')
    p = subprocess.Popen([sys.executable, '-c', KILLED_CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    said = 0
    try:
        for line in p.stdout:
            if line.startswith('logged '): said = int(line.split()[1])
            if said >= 12: break
    finally:
        p.send_signal(signal.SIGKILL); p.wait(30)
    assert said >= 12, 'the run did not reach step 12'
    d = tmp_path/'killed'
    steps = [r['step'] for r in load_run(d).rows if 'loss' in r]
    assert steps[:said] == list(range(1, said + 1))  # nothing it had logged is lost
    assert load_run(d).status in (None, 'killed')     # no end recorded: never drawn as finished
    assert 'interrupted' in write_report(d).read_text() or 'killed' in write_report(d).read_text()

# --- the real recorded GRPO run, checked against its own raw files (not against viz's code) ---------------------------

def test_grpo_views_match_the_recorded_rollouts():
    "Each view of a real CPU GRPO run re-derived from the files TRL and the engine wrote: rollouts, metrics, timeline."
    import numpy as np
    d, ro = load_run(GRPO_CPU), viz.read_rollouts(GRPO_CPU)
    figs = figures_of(d)
    per_step = ro.groupby('step')
    reward = next(t for t in figs['reward'].data if t.name == 'reward (raw)')
    assert list(reward.x) == sorted(ro.step.unique())
    np.testing.assert_allclose(reward.y, per_step.reward.mean().values, rtol=1e-5)   # TRL's metric = the mean of the logged rollouts
    fn = next(t for t in figs['reward'].data if t.name == 'exact_answer')
    np.testing.assert_allclose(fn.y, viz.smooth(list(per_step['rewards/exact_answer'].mean().values)), rtol=1e-5)  # drawn smoothed
    np.testing.assert_allclose(next(t for t in figs['length'].data if t.name == 'max').y, per_step.length.max().values)
    bars = {t.name: list(t.y) for t in figs['step_time'].data}
    for row, tl in zip(zip(*bars.values()), viz.read_jsonl(GRPO_CPU/'timeline.jsonl')):
        want = {n: sum(p['end'] - p['start'] for p in tl['phases'] if p['name'] == n) for n in bars}
        assert dict(zip(bars, row)) == pytest.approx(want, rel=1e-6)
    # the length hint fires because every completion really hit the limit: check that from the rollouts
    limit = d.config['method']['max_completion_length']
    assert (ro.length == limit).all()
    assert [h.message.split()[0] for h in health(d.rows, d.config)] == ['100%']
    # advantages are group-centred within each (step, prompt): GRPO's definition, from the raw rollouts
    assert ro.groupby(['step', 'prompt']).advantage.sum().abs().max() < 1e-4

def test_live_update_is_cheaper_than_a_rebuild():
    "The live view's design (nbs/11_viz): build the grid once, then only put new data into its traces."
    import time
    d = load_run(GRPO); traces = {n: viz.VIEWS[n].traces(d) for n in GRPO_VIEWS}
    def best(f, n=3):
        ts = []
        for _ in range(n): t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
        return min(ts)
    g = viz.grid_figure(GRPO_VIEWS)
    build = best(lambda: viz.sync_all(viz.grid_figure(GRPO_VIEWS), traces))
    update = best(lambda: viz.sync_all(g, traces))
    assert update < build / 3, (update, build)  # measured about 8x under load on 2 cores; a rebuild per update would be 1x

def test_a_failed_run_shows_its_error_without_no_warnings(tmp_path):
    "Issue 10: a failure is shown once, never beside a green 'no warnings'."
    import json
    d = shutil.copytree(SFT, tmp_path/'run')  # a run with no health hint: the case where 'no warnings' would show
    (d/'result.json').write_text(json.dumps({'status': 'failed', 'step': 3, 'error': 'ConfigError: boom'}))
    side = open_run(d, mode='handle').side_html()
    assert not health(load_run(d).rows, load_run(d).config) and 'failed' in side and 'boom' in side and 'no warnings' not in side
    assert 'no warnings' not in write_report(d).read_text()

def test_viz_imports_no_widgets():
    "`ftnb.viz` draws with plain plotly: importing it (in a fresh process) loads neither ipywidgets nor anywidget."
    code = "import sys, ftnb.viz; bad = {'ipywidgets', 'anywidget'} & set(sys.modules); assert not bad, bad; assert 'plotly' in sys.modules"
    subprocess.run([sys.executable, '-c', code], check=True, timeout=120)

def test_figurewidget_carries_plotlys_bundle():
    "Why the live view uses one FigureWidget and the report plain figures: each FigureWidget carries plotly's JS, about 4.8 MB."
    import plotly.graph_objects as go
    assert 4.0e6 < len(go.FigureWidget()._esm) < 6.0e6

# --- the report's summary, config and figures (issue 11, item 8) -----------------------------------------------------

def summary_rows(txt) -> dict:
    "The rows of the report's summary table, parsed back from its HTML."
    tab = re.search(r"<table class='ftnb-summary'>(.*?)</table>", txt, re.S).group(1)
    return dict(re.findall(r"<th[^>]*>(.*?)</th><td>(.*?)</td>", tab))

def test_report_summary_sft(tmp_path):
    "The SFT report opens with a summary: steps, final and best losses, tokens, duration, status and the weights left."
    import json
    d = shutil.copytree(SFT, tmp_path/'sft')
    (d/'final').mkdir(); (d/'checkpoint-30').mkdir(); (d/'checkpoint-60').mkdir()
    txt = write_report(d).read_text()
    assert txt.index("class='ftnb-summary'") < txt.index("class='ftnb-fig'")      # the table comes first
    s = summary_rows(txt)
    rows = [json.loads(l) for l in (SFT/'metrics.jsonl').read_text().splitlines()]
    loss = [(r['loss'], r['step']) for r in rows if 'loss' in r]; ev = [r['eval_loss'] for r in rows if 'eval_loss' in r]
    assert s['method'] == 'sft, adapter full' and s['status'] == 'finished' and s['steps'] == '60/60'
    assert s['train loss'] == f'final {loss[-1][0]:.4g} · best {min(loss)[0]:.4g} (step {min(loss)[1]})'
    assert s['eval loss'] == f'final {ev[-1]:.4g} · best {min(ev):.4g} (step 60)'
    assert s['tokens'] == f"{int([r['num_tokens'] for r in rows if 'num_tokens' in r][-1]):,}" and re.fullmatch(r'\d+ s', s['duration'])
    assert s['weights'] == 'final/, checkpoint-60 (newest of 2)' and 'mean reward' not in s

def test_report_sft_has_no_grpo_fields(tmp_path):
    "An SFT run with full fine-tuning lists neither GRPO's settings nor an adapter's; a GRPO LoRA run lists both."
    from ftnb.config import MethodCfg
    grpo_only = [n for n, f in MethodCfg.model_fields.items() if f.description.startswith('GRPO')]
    assert {'num_generations', 'max_completion_length', 'gpu_memory_utilization', 'sleep_level', 'rewards'} <= set(grpo_only)
    sft = write_report(shutil.copytree(SFT, tmp_path/'sft')).read_text()
    cfg = re.search(r"<pre class='ftnb-config'>(.*?)</pre>", sft, re.S).group(1)
    assert not [n for n in grpo_only if re.search(rf'^\s*{n}:', cfg, re.M)]
    page = re.sub(r'<script.*?</script>', '', sft, flags=re.S)  # plotly.js holds words such as 'beta' and 'sync'
    assert not [n for n in grpo_only if len(n) > 8 and n in page]
    assert 'method: full' in cfg and not re.search(r'^\s+(r|alpha|target_modules|alora_invocation):', cfg, re.M)
    assert 'max_length: 32' in cfg and 'lr: 0.002' in cfg and 'Left out: ' in sft   # what acts stays
    grpo = write_report(shutil.copytree(GRPO_CPU, tmp_path/'grpo')).read_text()
    cfg = re.search(r"<pre class='ftnb-config'>(.*?)</pre>", grpo, re.S).group(1)
    assert 'num_generations: 4' in cfg and 'max_completion_length: 5' in cfg and re.search(r'^\s+r: 8$', cfg, re.M)
    assert 'alora_invocation' not in cfg    # aLoRA only, and this is LoRA

def test_report_summary_grpo(tmp_path):
    "A GRPO report's summary adds the mean reward at the first and last log, read from metrics.jsonl."
    import json
    rows = [json.loads(l) for l in (GRPO_CPU/'metrics.jsonl').read_text().splitlines()]
    r = [x['reward'] for x in rows if 'reward' in x]
    s = summary_rows(write_report(shutil.copytree(GRPO_CPU, tmp_path/'g')).read_text())
    assert s['method'] == 'grpo, adapter lora' and s['steps'] == '12/12'
    assert s['mean reward'] == f'first {r[0]:.4g} → last {r[-1]:.4g}' and s['weights'] == 'none saved'

@pytest.mark.parametrize('run', RUNS)
def test_report_figures_are_the_live_views(run, tmp_path):
    "The report draws the views the live view draws for the same run (same names, order and traces), not its own."
    import json
    d = shutil.copytree(run, tmp_path/run.name)
    txt = write_report(d).read_text()
    drawn = re.findall(r'"ftnb_view":\s*"(\w+)"', txt)
    dash = open_run(d, mode='handle')
    assert drawn == list(dash.figs) and drawn
    named = {json.loads(f'"{n}"') for n in re.findall(r'"name":\s*"((?:[^"\\]|\\.)*)"', txt)}  # JSON-escaped (± as \u00b1)
    for name, fig in dash.figs.items():
        assert {t.name for t in fig.data} <= named, name

def test_report_writes_the_model_card(tmp_path):
    "A run saved with TRL's card ('fine-tuned version of None') gets ftnb's: the base model's real name, data, steps, losses."
    import json
    d = shutil.copytree(SFT, tmp_path/'sft'); (d/'final').mkdir()
    (d/'final'/'README.md').write_text('This model is a fine-tuned version of [None](https://huggingface.co/None).')
    txt = write_report(d).read_text()
    card, m = (d/'final'/'README.md').read_text(), json.loads((SFT/'result.json').read_text())['metrics']
    assert 'None' not in card and 'base_model: tiny-qwen2' in card and 'a fine-tuned version of `tiny-qwen2`' in card
    assert '| dataset | toy:addition (eval: toy:addition_test) |' in card and '| adapter | full fine-tuning (every weight) |' in card
    assert '| steps | 60 (finished) |' in card and f"| final train loss | {m['loss']:.4g} |" in card and f"| final eval loss | {m['eval_loss']:.4g} |" in card
    assert "href='final/README.md'" in txt

def test_reward_figure_draws_the_heldout_eval(tmp_path):
    "A GRPO run folder whose metrics.jsonl has eval/reward rows (ftnb.grpo.HeldOutEval): the reward figure, the report's too, draws them beside the training reward."
    import json
    rows = [{'step': s, 'reward': 0.1 * s, 'reward_std': 0.05} for s in (1, 2, 3, 4)] + \
           [{'step': 2, 'eval/reward': 0.42, 'eval/accuracy': 0.4}, {'step': 4, 'eval/reward': 0.55, 'eval/accuracy': 0.5}]
    (tmp_path/'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    fig = figures_of(viz.load_run(tmp_path), ['reward'])['reward']
    tr = {t.name: t for t in fig.data}
    assert list(tr['eval reward (greedy)'].x) == [2, 4] and list(tr['eval reward (greedy)'].y) == [0.42, 0.55]
    assert list(tr['eval accuracy'].y) == [0.4, 0.5] and list(tr['reward'].x) == [1, 2, 3, 4]
    assert 'eval reward (greedy)' in viz.write_report(tmp_path).read_text()  # the report draws the same figure
    (tmp_path/'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows[:4]))  # no held-out set: no eval trace
    assert not [t for t in figures_of(viz.load_run(tmp_path), ['reward'])['reward'].data if t.name.startswith('eval')]
