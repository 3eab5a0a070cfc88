"Reward functions, registry, combine and safe (ftnb.rewards); the last tests run them inside TRL's GRPOTrainer."
import asyncio, math, pickle, subprocess, sys
from pathlib import Path
import pytest
from ftnb.config import ConfigError, FtnbError
from ftnb import rewards as R
from ftnb.rewards import (REWARDS, RewardError, Safe, SafeAsync, answer_text, combine, exact_answer, get, keyword_present,
                          last_number, length_penalty, numeric_answer, regex_format, register, reward_name, safe, text_of,
                          think_format)

def chat(text): return [{'role': 'assistant', 'content': text}]

# --- completions and answers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('c,want', [
    ('plain', 'plain'), (chat('hi'), 'hi'), ({'role': 'assistant', 'content': 'one'}, 'one'), (None, ''),
    ([{'role': 'user', 'content': 'q'}], 'q'),  # no assistant message: the last message
    ([{'role': 'assistant', 'content': 'a'}, {'role': 'tool', 'content': 't'}, {'role': 'assistant', 'content': 'b'}], 'b'),
    (chat([{'type': 'text', 'text': 'x'}, {'type': 'image'}, {'type': 'text', 'text': 'y'}]), 'xy'),
    (chat(None), ''), ([], ''), (42, '42')])
def test_text_of(c, want): assert text_of(c) == want

def test_answer_text():
    assert answer_text('<think>no</think><answer> 7 </answer>') == '7'
    assert answer_text('<answer>1</answer><answer>2</answer>') == '2'
    assert answer_text('<answer>cut off') == 'cut off'
    assert answer_text('  whole  ') == 'whole'
    assert answer_text('<ans>3</ans>', tag='ans') == '3'
    assert answer_text('<a.b>3</a.b>', tag='a.b') == '3'  # tag is escaped

@pytest.mark.parametrize('t,want', [('x = 3', 3.0), ('-2', -2.0), ('1,234,567', 1234567.0), ('1.5e2', 150.0),
                                    ('.25', 0.25), ('5-3', 3.0), ('f(x)-2', 2.0), ('$1,000.50', 1000.5), ('none', None),
                                    ('x2', 2.0), ('12345', 12345.0), ('a -7.', -7.0)])
def test_last_number(t, want): assert last_number(t) == want

# --- each reward, in both forms ----------------------------------------------------------------------------------

@pytest.mark.parametrize('form', [str, chat])
def test_regex_format(form):
    f = regex_format(r'<answer>\d+</answer>')
    assert f.__name__ == 'regex_format' and 'regex_format' in repr(f)
    assert f([form('<answer>4</answer>\n'), form('x <answer>4</answer>')]) == [1.0, 0.0]
    assert regex_format(r'<answer>\d+</answer>', search=True, name='has_answer')([form('x <answer>4</answer>')]) == [1.0]
    assert regex_format('a.b')([form('a\nb')]) == [1.0]  # DOTALL
    with pytest.raises(ConfigError, match=r"fmt.pattern='\[': not a regular expression"): regex_format('[', name='fmt')

@pytest.mark.parametrize('form', [str, chat])
def test_think_format(form):
    cs = [form(t) for t in ['<think>a</think><answer>b</answer>', ' <think>a</think>\n\n<answer>b</answer>\n',
                            '<think>a</think><answer>b</answer> trailing', '<think>a</think><think>c</think><answer>b</answer>',
                            '<answer>b</answer>', '<think>a</think><answer></answer>', 'nothing']]
    assert think_format(cs) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert think_format(cs, partial=True) == [1.0, 1.0, 0.75, 0.5, 0.5, 0.75, 0.0]

@pytest.mark.parametrize('form', [str, chat])
def test_exact_answer(form):
    cs = [form(t) for t in ['<answer>Paris</answer>', 'paris ', 'It is Paris', '<answer>new  york</answer>', 'x', 'y']]
    assert exact_answer(cs, answer=['Paris', 'Paris', 'Paris', 'New York', None, float('nan')]) == [1.0, 1.0, 0.0, 1.0, None, None]
    assert exact_answer(cs[:2], answer=['Paris'] * 2, ignore_case=False) == [1.0, 0.0]
    assert exact_answer([form('<a>4</a>')], gold=[4], column='gold', tag='a') == [1.0]
    assert exact_answer([form('')], answer=['  ']) == [None]

def test_answer_column_missing():
    with pytest.raises(ConfigError) as e: exact_answer(['4'], prompts=['q'], answers=['4'], trainer_state=None)
    msg = str(e.value)
    assert "exact_answer.column='answer'" in msg and "dataset columns: answers" in msg and "did you mean 'answers'" in msg
    assert 'prompts' not in msg.split('Fix')[0].split('(')[1]  # TRL's own keywords are not listed as columns
    with pytest.raises(ConfigError, match='numeric_answer.column'): numeric_answer(['4'])

@pytest.mark.parametrize('form', [str, chat])
def test_numeric_answer(form):
    cs = [form(t) for t in ['<answer>x = 12</answer>', 'the total is 1,200.', '<answer>0.3333</answer>', 'I give up',
                            '<answer>5</answer> 6', '9']]
    refs = [12, '#### 1200', 1 / 3, '4', 5.0, 'no number']
    assert numeric_answer(cs, answer=refs) == [1.0, 1.0, 0.0, 0.0, 1.0, None]
    assert numeric_answer(cs[2:3], answer=[1 / 3], tol=1e-3) == [1.0]
    assert numeric_answer(cs[2:3], answer=[1 / 3], tol=0, rel_tol=1e-3) == [1.0]
    assert numeric_answer([form('1')], answer=[True]) == [None]  # a bool is no reference
    assert numeric_answer([form('<r>3</r>')], ref=['3'], column='ref', tag='r') == [1.0]

@pytest.mark.parametrize('form', [str, chat])
def test_length_penalty(form):
    cs = [form('x' * n) for n in (0, 100, 150, 200, 1000)]
    assert length_penalty(cs, max_len=100) == [0.0, 0.0, -0.5, -1.0, -1.0]
    assert length_penalty(cs, max_len=100, unit='tokens', completion_ids=[[0] * n for n in (1, 2, 3, 4, 5)]) == \
        [0.0, 0.0, 0.0, 0.0, 0.0]
    assert length_penalty(cs[:1], max_len=2, unit='tokens', completion_ids=[[0, 0, 0]]) == [-0.5]
    assert all(str(v) != '-0.0' for v in length_penalty(cs, max_len=100))
    with pytest.raises(ConfigError, match="length_penalty.unit='words'"): length_penalty(cs, unit='words')
    with pytest.raises(ConfigError, match='length_penalty.max_len=-1'): length_penalty(cs, max_len=-1)
    with pytest.raises(ConfigError, match='no completion_ids'): length_penalty(cs, unit='tokens')

@pytest.mark.parametrize('form', [str, chat])
def test_keyword_present(form):
    f = keyword_present(['because', 'Answer'])
    assert f.__name__ == 'keyword_present'
    assert f([form('BECAUSE the answer'), form('because'), form('-')]) == [1.0, 0.5, 0.0]
    assert keyword_present('Answer', ignore_case=False, name='kw')([form('answer'), form('Answer')]) == [0.0, 1.0]
    for bad in ([], '', [1]):
        with pytest.raises(ConfigError, match='keyword_present.keywords'): keyword_present(bad)

def test_rewards_accept_trl_kwargs():
    "GRPOTrainer passes these keywords to every reward; none of ours may choke on them."
    kw = dict(prompts=['p', 'p'], completion_ids=[[1], [2]], trainer_state=object(), log_extra=print, log_metric=print,
              answer=['4', '5'], other_column=[1, 2])
    cs = ['<think>t</think><answer>4</answer>', '5']
    for name in ['think_format', 'exact_answer', 'numeric_answer', 'length_penalty']:
        assert len(get(name)(completions=cs, **kw)) == 2
    for f in [regex_format('.*'), keyword_present('4')]: assert len(f(completions=cs, **kw)) == 2

# --- registry and get --------------------------------------------------------------------------------------------

def test_registry_contents():
    assert {'regex_format', 'think_format', 'exact_answer', 'numeric_answer', 'length_penalty', 'keyword_present'} <= set(REWARDS)
    assert REWARDS['regex_format'].reward_factory and not getattr(REWARDS['exact_answer'], 'reward_factory', False)

def test_register_and_get():
    try:
        @register('t_upper')
        def upper(completions, bonus:float=1.0, **kwargs): return [bonus * text_of(c).isupper() for c in completions]
        @register
        def t_bare(completions, **kwargs): return [0.0] * len(completions)
        @register('t_starts', factory=True)
        def starts(prefix:str): return regex_format(rf'{prefix}.*', name='starts')
        assert REWARDS['t_upper'] is upper and REWARDS['t_bare'] is t_bare
        assert get('t_upper')(['HI', 'hi']) == [1.0, 0.0]
        g = get('t_upper', bonus=2.0)
        assert reward_name(g) == 'upper' and g(['HI']) == [2.0]
        assert get('t_starts', prefix='A')(['Abc', 'bc']) == [1.0, 0.0]
        with pytest.raises(ConfigError, match=r"t_starts.prefix=None: required parameter missing"): get('t_starts')
        with pytest.raises(ConfigError, match=r"t_bare.x=1: unknown parameter. Fix: this reward takes no parameters"):
            get('t_bare', x=1)
    finally:
        for k in ('t_upper', 't_bare', 't_starts'): REWARDS.pop(k, None)

def test_get_errors():
    with pytest.raises(ConfigError) as e: get('numeric_anwser')
    msg = str(e.value)
    assert msg.startswith("reward='numeric_anwser': unknown reward (did you mean 'numeric_answer'?). Fix: use one of:")
    for name in REWARDS: assert name in msg
    with pytest.raises(ConfigError, match="unknown reward. Fix"): get('zzzzzz')
    with pytest.raises(ConfigError, match=r"exact_answer.colum='x': unknown parameter \(did you mean 'column'\?\)"):
        get('exact_answer', colum='x')
    with pytest.raises(ConfigError, match='completions'): get('exact_answer', completions=[])  # TRL fills it, not a config

# --- safe and RewardError -------------------------------------------------------------------------------------------

def needs_digit(completions, answer, **kwargs):
    return [1.0 / int(text_of(c)[-1]) if a else None for c, a in zip(completions, answer)]

@pytest.mark.parametrize('form', [str, chat])
def test_safe_names_sample_of_exception(form):
    f = safe(needs_digit)
    assert f.__name__ == 'needs_digit' and isinstance(f, Safe) and not isinstance(f, SafeAsync)
    assert f([form('a1'), form('b2')], answer=['x', None]) == [1.0, None]
    long = 'x' * 200
    with pytest.raises(RewardError) as e: f([form('a1'), form('a0'), form(long)], answer=['x'] * 3, prompts=['p'] * 3)
    err = e.value
    assert (err.func, err.index, text_of(err.completion)) == ('needs_digit', 1, 'a0')
    assert str(err) == ("reward 'needs_digit' on sample 1 (completion 'a0'): ZeroDivisionError: float division by zero. "
                        "Fix: fix the function, or have it return None for samples it cannot score")
    assert isinstance(err.__cause__, ZeroDivisionError) and isinstance(err, FtnbError) and not isinstance(err, ValueError)
    with pytest.raises(RewardError) as e: f([form('a1'), form(long)], answer=['x'] * 2)
    assert e.value.index == 1 and "ValueError: invalid literal" in str(e.value)
    assert "(completion 'xxxx" in str(e.value) and len(str(e.value)) < 300 and '…' in str(e.value)

def test_safe_batch_only_failure():
    def pairs(completions, **kwargs):
        if len(completions) > 1: raise RuntimeError('batch too big')
        return [1.0]
    with pytest.raises(RewardError) as e: safe(pairs)(['a', 'b'])
    assert e.value.index is None and 'RuntimeError: batch too big' in str(e.value) and 'no sample alone' in str(e.value)

def test_safe_reports_batch_error_when_it_differs():
    def f(completions, **kwargs):
        if len(completions) > 2: raise RuntimeError('too many')
        return [1 / len(text_of(c)) for c in completions]
    with pytest.raises(RewardError) as e: f_ = safe(f); f_(['a', '', 'b'])
    assert str(e.value).startswith("reward 'f' on sample 1 (completion ''): ZeroDivisionError: division by zero "
                                   "(on the whole batch: RuntimeError: too many)")

def test_safe_slices_columns_and_mutes_loggers():
    seen, logged = [], []
    def f(completions, answer, prompts, trainer_state, log_extra, **kwargs):
        seen.append((list(completions), list(answer), list(prompts), trainer_state))
        log_extra('col', list(answer))
        if 'bad' in completions: raise KeyError('bad')
        return [0.0] * len(completions)
    with pytest.raises(RewardError, match=r"on sample 2 \(completion 'bad'\): KeyError: 'bad'"):
        safe(f)(['ok', 'ok2', 'bad'], answer=['a', 'b', 'c'], prompts=['p', 'q', 'r'], trainer_state='S',
                log_extra=lambda col, v: logged.append(v))
    assert seen[1:] == [(['ok'], ['a'], ['p'], 'S'), (['ok2'], ['b'], ['q'], 'S'), (['bad'], ['c'], ['r'], 'S')]
    assert logged == [['a', 'b', 'c']]  # only the real batch call logged

@pytest.mark.parametrize('out,words', [
    ([1.0], "reward 'bad': returned 1 value for 2 completions (expected 2)"),
    ([1.0, 2.0, 3.0], 'returned 3 values for 2 completions (expected 2)'),
    (None, 'returned NoneType, not a list of 2 values'), ('11', 'returned str'), (1.0, 'returned float'),
    ([1.0, 'x'], "reward 'bad' on sample 1 (completion 'b'): returned 'x' (str), not a number"),
    ([{'r': 1}, 1.0], "on sample 0 (completion 'a'): returned {'r': 1} (dict)"),
    ([math.inf, 1.0], 'on sample 0'), ])
def test_safe_checks_results(out, words):
    def bad(completions, **kwargs): return out
    with pytest.raises(RewardError) as e: safe(bad)(['a', 'b'])
    assert words in str(e.value) and 'Fix:' in str(e.value)

def test_safe_accepts_what_trl_accepts():
    assert safe(lambda completions, **kw: (1, True, None))(['a', 'b', 'c']) == [1, True, None]
    assert math.isnan(safe(lambda completions, **kw: [math.nan])(['a'])[0])  # NaN is TRL's None

def test_safe_passes_ftnb_errors_and_renames():
    with pytest.raises(ConfigError): safe(exact_answer)(['4'])
    f = safe(needs_digit, 'digits')
    assert f.__name__ == 'digits' and repr(f) == 'safe(digits)' and safe(f).fn is needs_digit and safe(f).__name__ == 'digits'
    assert safe(f, 'x').__name__ == 'x'

def test_safe_async():
    async def judge(completions, **kwargs):
        await asyncio.sleep(0)
        return [1.0 / len(text_of(c)) for c in completions]
    f = safe(judge)
    assert isinstance(f, SafeAsync) and f.__name__ == 'judge'
    assert asyncio.run(f(['ab'])) == [0.5]
    with pytest.raises(RewardError, match=r"reward 'judge' on sample 1 \(completion ''\): ZeroDivisionError"):
        asyncio.run(f(['ab', chat(''), 'c']))
    from trl.trainer.utils import is_async_callable
    assert is_async_callable(f) and not is_async_callable(safe(needs_digit))

# --- combine -----------------------------------------------------------------------------------------------------

def test_combine():
    def mine(completions, **kwargs): return [1.0] * len(completions)
    funcs, weights = combine([{'name': 'exact_answer', 'weight': 1.0}, {'name': 'length_penalty', 'weight': 0.1, 'max_len': 200},
                              'think_format', mine, {'name': mine, 'weight': -0.5}, {'name': 'keyword_present', 'keywords': 'so'},
                              {'name': 'regex_format', 'pattern': 'a', 'weight': 2}, {'name': 'regex_format', 'pattern': 'b'}])
    assert [f.__name__ for f in funcs] == ['exact_answer', 'length_penalty', 'think_format', 'mine', 'mine_2',
                                           'keyword_present', 'regex_format', 'regex_format_2']
    assert weights == [1.0, 0.1, 1.0, 1.0, -0.5, 1.0, 2.0, 1.0] and all(type(w) is float for w in weights)
    assert all(isinstance(f, Safe) for f in funcs)
    out = [f(completions=['a', chat('so b')], prompts=['p', 'p'], answer=['a', None]) for f in funcs]
    assert out == [[1.0, None], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]
    assert combine('think_format')[0][0].__name__ == 'think_format'  # a single spec is fine too
    assert combine({'name': 'exact_answer', 'column': 'sol'})[0][0](['4'], sol=['4']) == [1.0]

@pytest.mark.parametrize('specs,words', [
    ([], 'rewards=[]: no reward functions'),
    ([{'name': 'exact_anwser'}], "rewards[0].name='exact_anwser': unknown reward (did you mean 'exact_answer'?)"),
    (['think_format', 'lenght_penalty'], "rewards[1].name='lenght_penalty'"),
    ([{'name': 'length_penalty', 'max_ln': 3}], "rewards[0].length_penalty.max_ln=3: unknown parameter (did you mean 'max_len'?)"),
    ([{'name': 'regex_format'}], 'rewards[0].regex_format.pattern=None: required parameter missing'),
    ([{'name': 'exact_answer', 'weight': 'big'}], "rewards[0].weight='big': not a finite number"),
    ([{'name': 'exact_answer', 'weight': math.nan}], 'rewards[0].weight=nan'),
    ([{'weight': 1.0}], 'rewards[0]='), ([3], 'rewards[0]=3: not a reward spec'), ([{'name': 3}], 'rewards[0].name=3'),
    ([lambda completions: [0.0]], 'takes no **kwargs'),
    ([{'name': 'regex_format', 'pattern': '('}], 'not a regular expression')])
def test_combine_errors(specs, words):
    with pytest.raises(ConfigError) as e: combine(specs)
    assert words in str(e.value) and 'Fix:' in str(e.value)

def test_combined_rewards_pickle():
    "TRL's async rollout worker pickles reward functions into a child process."
    funcs, _ = combine(['exact_answer', {'name': 'length_penalty', 'max_len': 5}, {'name': 'regex_format', 'pattern': 'x'},
                        {'name': 'keyword_present', 'keywords': ['x']}, 'think_format'])
    back = pickle.loads(pickle.dumps(funcs))
    assert [f.__name__ for f in back] == [f.__name__ for f in funcs]
    assert [f(['x'], answer=['x']) for f in back] == [f(['x'], answer=['x']) for f in funcs]

# --- the module itself ---------------------------------------------------------------------------------------------

def test_no_signals_and_light_import():
    assert 'signal' not in Path(R.__file__).read_text().replace('signals', '')
    code = "import sys, ftnb.rewards; print(any(m in sys.modules for m in ('torch', 'trl', 'ipywidgets', 'plotly', 'vllm')))"
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip() == 'False'
    # signal.alarm only works on the main thread, and GRPO's rewards may run elsewhere: no ftnb module may use it
    import re
    assert not [p.name for p in Path(R.__file__).parent.glob('*.py') if re.search(r'\bSIGALRM\b|\.alarm\(', p.read_text())]

# --- inside TRL's GRPOTrainer ------------------------------------------------------------------------------------

def tiny_grpo(tmp_path, funcs, weights, chat_form=False):
    "A 1-layer char-level Qwen2 and a GRPOTrainer over 8 addition prompts (built here, offline)."
    import torch
    from datasets import Dataset
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config
    from trl import GRPOConfig, GRPOTrainer
    chars = ['<pad>', '<eos>'] + list('0123456789+=<>/abcdefghijklmnopqrstuvwxyz ')
    t = Tokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token='<pad>'))
    t.pre_tokenizer = pre_tokenizers.Split(Regex('.'), behavior='isolated')
    t.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token='<pad>', eos_token='<eos>')
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}={% endif %}"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen2Config(
        vocab_size=len(chars), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=1))
    rows = [(f'{a}+{b}', str(a + b)) for a, b in [(1, 2), (3, 4), (2, 2), (5, 1), (6, 3), (4, 4), (7, 1), (2, 5)]]
    prompts = [[{'role': 'user', 'content': p}] for p, _ in rows] if chat_form else [p + '=' for p, _ in rows]
    ds = Dataset.from_dict({'prompt': prompts, 'answer': [a for _, a in rows]})
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4, max_completion_length=6,
                      max_steps=1, logging_steps=1, report_to=[], reward_weights=weights, use_cpu=True, save_strategy='no',
                      seed=0)
    return GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=ds, processing_class=tok)

@pytest.mark.parametrize('chat_form', [False, True])
def test_grpo_trainer_runs_combined_rewards(tmp_path, chat_form):
    seen = []
    def record(completions, **kwargs): seen.append((completions[0], set(kwargs))); return [None] * len(completions)
    funcs, weights = combine([{'name': 'numeric_answer', 'weight': 1.0}, {'name': 'length_penalty', 'weight': 0.1, 'max_len': 3},
                              {'name': 'regex_format', 'pattern': r'\d.*'}, {'name': 'regex_format', 'pattern': r'.*\d'}, record])
    tr = tiny_grpo(tmp_path, funcs, weights, chat_form)
    tr.train()
    first, keys = seen[0]
    assert isinstance(first, list) == chat_form  # TRL passes conversations for a chat dataset
    assert {'prompts', 'completion_ids', 'trainer_state', 'answer'} <= keys
    logs = {k for h in tr.state.log_history for k in h}
    for name in ['numeric_answer', 'length_penalty', 'regex_format', 'regex_format_2', 'record']:
        assert f'rewards/{name}/mean' in logs, logs

def test_grpo_trainer_reports_failing_sample(tmp_path):
    target = []
    def picky(completions, **kwargs):  # fails on whatever the third completion of the first batch says
        if not target: target.append(text_of(completions[2]))
        return [1 / 0 if text_of(c) == target[0] else 1.0 for c in completions]
    funcs, weights = combine(['exact_answer', picky])
    tr = tiny_grpo(tmp_path, funcs, weights)
    with pytest.raises(RewardError, match=r"reward 'picky' on sample \d \(completion .*\): ZeroDivisionError") as e: tr.train()
    assert e.value.index <= 2 and text_of(e.value.completion) == target[0]
