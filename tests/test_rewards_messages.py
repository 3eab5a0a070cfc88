"""Every message the rewards module can give, word for word, and the small helpers behind them.

Written against the survivors of a mutation run (issue 14): tests/test_rewards.py checks what the rewards compute and
that errors name the right thing; these pin the whole text of each error (the fix included), the error's fields, and
the edges of the helpers (truncation at 80 characters, a conversation's roles, async detection)."""
import asyncio, functools, inspect
import pytest
from ftnb import rewards as R
from ftnb.config import ConfigError

REGISTERED = 'exact_answer, keyword_present, length_penalty, numeric_answer, regex_format, think_format'
ONE_PER = 'return one float (or None to skip) per completion, in order'

def f(completions, **kw): return [1.0] * len(completions)
def no_kwargs(completions): return [1.0] * len(completions)

def msg(fn, err=ConfigError) -> str:
    with pytest.raises(err) as e: fn()
    return str(e.value)

@pytest.mark.parametrize('specs,want', [
    ([], f"rewards=[]: no reward functions. Fix: add at least one, e.g. [{{'name': 'exact_answer'}}]; registered: {REGISTERED}"),
    ([{'name': 'exact_anser'}], f"rewards[0].name='exact_anser': unknown reward (did you mean 'exact_answer'?). Fix: use one of: {REGISTERED}; or register your own with @register('name'), or pass the function itself"),
    (['exact_answer', {'name': 'zzzzqqq'}], f"rewards[1].name='zzzzqqq': unknown reward. Fix: use one of: {REGISTERED}; or register your own with @register('name'), or pass the function itself"),
    ([{'name': 'exact_answer', 'colum': 'x'}], "rewards[0].exact_answer.colum='x': unknown parameter (did you mean 'column'?). Fix: use one of: column, tag, ignore_case"),
    ([{'name': 'exact_answer', 'zzzz': 'x'}], "rewards[0].exact_answer.zzzz='x': unknown parameter. Fix: use one of: column, tag, ignore_case"),
    ([{'name': 'exact_answer', 'tag': 'a', 'colum': 'x'}], "rewards[0].exact_answer.colum='x': unknown parameter (did you mean 'column'?). Fix: use one of: column, tag, ignore_case"),
    ([{'name': f, 'p': 1}], "rewards[0].f.p=1: unknown parameter. Fix: this reward takes no parameters"),
    ([{'weight': 1}], "rewards[0]={'weight': 1}: not a reward spec. Fix: use a registered name, a function, or a dict like {'name': 'exact_answer', 'weight': 1.0}"),
    ([{'name': 'exact_answer', 'weight': float('nan')}], "rewards[0].weight=nan: not a finite number. Fix: e.g. 1.0, or 0.1 for a shaping term"),
    ([{'name': 'exact_answer', 'weight': True}], "rewards[0].weight=True: not a finite number. Fix: e.g. 1.0, or 0.1 for a shaping term"),
    ([{'name': 5}], "rewards[0].name=5: not a reward. Fix: use a registered name or a function"),
    (['exact_answer', no_kwargs], "rewards[1]='no_kwargs': takes no **kwargs, but GRPOTrainer passes prompts, completion_ids and every dataset column as keywords. Fix: add **kwargs to its parameters")])
def test_combine_messages(specs, want):
    assert msg(lambda: R.combine(specs)) == want

def test_combine_error_fields():
    e = pytest.raises(ConfigError, R.combine, [{'name': 5}]).value
    assert (e.field, e.value, e.problem, e.fix) == ('rewards[0].name', 5, 'not a reward', 'use a registered name or a function')
    e = pytest.raises(ConfigError, R.combine, [no_kwargs]).value
    assert (e.field, e.value) == ('rewards[0]', 'no_kwargs')
    e = pytest.raises(ConfigError, R.combine, [{'name': 'regex_format'}]).value  # a factory without its required pattern
    assert (e.field, e.value, e.problem, e.fix) == ('rewards[0].regex_format.pattern', None, 'required parameter missing', 'add pattern=... to the spec')

def test_combine_one_spec_names_and_weights():
    fs, ws = R.combine('exact_answer')  # one name, one dict, one function: each is a list of one
    assert [x.__name__ for x in fs] == ['exact_answer'] and ws == [1.0]
    assert [x.__name__ for x in R.combine(f)[0]] == ['f'] and [x.__name__ for x in R.combine({'name': 'f2', 'weight': 2} | {'name': f})[0]] == ['f']
    fs, ws = R.combine(['exact_answer', {'name': 'exact_answer', 'weight': 0.5}, {'name': f, 'weight': 2}])
    assert [x.__name__ for x in fs] == ['exact_answer', 'exact_answer_2', 'f'] and ws == [1.0, 0.5, 2.0]
    assert fs[0].fn is R.REWARDS['exact_answer']  # no parameters: the function itself, not a partial

def test_reference_column_messages():
    cols = lambda **kw: R.get('exact_answer', column='ref')(['a'], prompts=['p'], completion_ids=[[1]], **kw)
    assert msg(lambda: cols(answer=['a'], reference=['b'])) == \
        "exact_answer.column='ref': the batch has no column 'ref' (dataset columns: answer, reference). Fix: set column= to the dataset column that holds the reference answers"
    assert msg(lambda: cols()) == \
        "exact_answer.column='ref': the batch has no column 'ref' (dataset columns: none). Fix: set column= to the dataset column that holds the reference answers"
    assert msg(lambda: cols(refs=['b'])) == \
        "exact_answer.column='ref': the batch has no column 'ref' (dataset columns: refs); did you mean 'refs'?. Fix: set column= to the dataset column that holds the reference answers"

@pytest.mark.parametrize('out,comps,want', [
    ('x', ['a'], f"reward 'b': returned str, not a list of 1 values. Fix: {ONE_PER}"),
    ({'a': 1}, ['a'], f"reward 'b': returned dict, not a list of 1 values. Fix: {ONE_PER}"),
    ([1.0], ['a', 'b'], f"reward 'b': returned 1 value for 2 completions (expected 2). Fix: {ONE_PER}"),
    ([1.0, 1.0], ['a'], f"reward 'b': returned 2 values for 1 completions (expected 1). Fix: {ONE_PER}"),
    ([None, float('inf')], ['a', 'b'], "reward 'b' on sample 1 (completion 'b'): returned inf. Fix: keep rewards finite"),
    ([None, '1'], ['a', 'b'], f"reward 'b' on sample 1 (completion 'b'): returned '1' (str), not a number. Fix: {ONE_PER}")])
def test_checked_messages(out, comps, want):
    assert msg(lambda: R.safe(lambda completions, **kw: out, 'b')(comps), R.RewardError) == want

def test_checked_error_fields_and_what_passes():
    e = pytest.raises(R.RewardError, R.safe(lambda completions, **kw: [None, float('-inf')], 'b'), ['a', 'b']).value
    assert (e.func, e.problem, e.index, e.completion, e.fix) == ('b', 'returned -inf', 1, 'b', 'keep rewards finite')
    e = pytest.raises(R.RewardError, R.safe(lambda completions, **kw: 3, 'b'), ['a']).value
    assert (e.func, e.index, e.completion, e.fix) == ('b', None, None, ONE_PER)
    assert R.safe(lambda completions, **kw: (None, 2, 0.5), 'b')(['a', 'b', 'c']) == [None, 2, 0.5]  # None skips; a tuple is a list

def test_failure_messages_name_the_sample():
    def on_batch_only(completions, **kw):
        if len(completions) > 1: raise ValueError('batch')
        return [1.0]
    assert msg(lambda: R.safe(on_batch_only)(['a', 'b']), R.RewardError) == ("reward 'on_batch_only': ValueError: batch. Fix: it failed on the "
        "batch but on no sample alone: look for code that spans the batch (lengths, zip, shared state)")
    def on_b(completions, answer, **kw):
        assert len(answer) == len(completions)  # each sample gets its own slice of the columns
        if 'b' in completions: raise KeyError('k')
        return [1.0] * len(completions)
    e = pytest.raises(R.RewardError, R.safe(on_b, 'mine'), ['a', 'b'], answer=['1', '2']).value
    assert str(e) == "reward 'mine' on sample 1 (completion 'b'): KeyError: 'k'. Fix: fix the function, or have it return None for samples it cannot score"
    assert (e.func, e.index, e.completion) == ('mine', 1, 'b')
    def differs(completions, **kw): raise ValueError('batch' if len(completions) > 1 else 'one')
    assert msg(lambda: R.safe(differs)(['a', 'b']), R.RewardError).startswith("reward 'differs' on sample 0 (completion 'a'): ValueError: one (on the whole batch: ValueError: batch)")

def test_samples_mute_trls_loggers_only_per_sample():
    seen = []
    def logs(completions, log_extra=None, log_metric=None, **kw):
        if len(completions) > 1: raise ValueError('batch')
        seen.append((log_extra, log_metric)); return [1.0]
    loud = lambda *a, **k: pytest.fail('a logger reached from a per-sample retry')
    with pytest.raises(R.RewardError): R.safe(logs)(['a', 'b'], log_extra=loud, log_metric=loud)
    assert len(seen) == 2 and all(a is R._noop and m is R._noop for a, m in seen)

def test_async_rewards_are_awaited_and_checked():
    async def af(completions, x, **kw): return [float(v) for v in x]
    s = R.safe(af, 'n')
    assert type(s).__name__ == 'SafeAsync' and s.__name__ == 'n' and asyncio.run(s(['a', 'b'], x=[1, 2])) == [1.0, 2.0]
    async def aboom(completions, **kw):
        if completions[0] == 'b' or len(completions) > 1: raise KeyError('k')
        return [1.0]
    assert msg(lambda: asyncio.run(R.safe(aboom)(['a', 'b'])), R.RewardError) == \
        "reward 'aboom' on sample 1 (completion 'b'): KeyError: 'k'. Fix: fix the function, or have it return None for samples it cannot score"
    async def abatch(completions, **kw):
        if len(completions) > 1: raise ValueError('batch')
        return [1.0]
    assert msg(lambda: asyncio.run(R.safe(abatch)(['a', 'b'])), R.RewardError).startswith("reward 'abatch': ValueError: batch. Fix: it failed on the batch")
    async def awrong(completions, **kw): return [1.0]
    assert msg(lambda: asyncio.run(R.safe(awrong, 'w')(['a', 'b'])), R.RewardError) == f"reward 'w': returned 1 value for 2 completions (expected 2). Fix: {ONE_PER}"
    class ACall:
        async def __call__(self, completions, **kw): return [1.0]
    assert R._is_async(functools.partial(af)) and R._is_async(functools.partial(functools.partial(af))) and R._is_async(ACall())
    assert not R._is_async(f) and not R._is_async(functools.partial(f))

def test_small_helpers():
    assert R._short('x' * 80) == 'x' * 80 and R._short('x' * 81) == 'x' * 79 + '…' and len(R._short('y' * 200)) == 80
    assert R._short('abcdef', 4) == 'abc…'
    assert R.text_of([{'role': 'user', 'content': 'u'}, {'content': 'c'}]) == 'c'  # a message without a role counts as said
    assert R.text_of([{'content': 'c'}, {'role': 'user', 'content': 'u'}]) == 'c'  # ...wherever it stands
    assert R.text_of([{'role': 'user', 'content': 'u'}]) == 'u'  # no assistant message: the last message
    assert R.text_of([{'role': 'assistant', 'content': 'a'}, {'role': 'user', 'content': 'u'}]) == 'a'
    assert R.answer_text('x <answer>a\nb</answer>') == 'a\nb' and R.answer_text('<answer> a\nb') == 'a\nb'
    class Call:
        def __call__(self, completions, **kw): return [1.0]
    assert R.reward_name(functools.partial(f)) == 'f' and R.reward_name(Call()) == 'Call'
    assert R._as_number(3) == 3.0 and R._as_number(2.5) == 2.5 and R._as_number('x 4') == 4.0 and R._as_number(True) is None
    assert R._takes_kwargs(f) and not R._takes_kwargs(no_kwargs)
    with pytest.raises(ValueError): inspect.signature(type)  # a callable whose signature cannot be read...
    assert R._takes_kwargs(type)  # ...is let through: its first call decides
    e = R.RewardError('n', 'p')
    assert str(e) == "reward 'n': p" and (e.index, e.completion, e.fix) == (None, None, '')
