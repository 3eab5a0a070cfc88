"Integration tests for ftnb.testing: determinism, saved folders, chat masks, toy data."
import json, os, subprocess, sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest
import torch

os.environ.setdefault('HF_HUB_OFFLINE', '1')
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftnb.config import ConfigError, DataError, RunConfig
from ftnb import testing as T

FIELDS = {'text': {'text'}, 'prompt_completion': {'prompt', 'completion'}, 'chat': {'messages'}, 'response': {'text'},
          'addition': {'prompt', 'completion'}, 'addition_test': {'prompt', 'completion'}}


@pytest.mark.parametrize('arch', ['qwen2', 'llama'])
def test_same_seed_same_weights(arch):
    a, b, c = (T.tiny_model(arch, seed=s).state_dict() for s in (0, 0, 1))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a['model.embed_tokens.weight'], c['model.embed_tokens.weight'])
    assert 3e5 <= sum(v.numel() for k, v in a.items() if k != 'lm_head.weight') <= 6e5


def test_tokenizer_is_the_same_in_another_process():
    "tiny_dir's folder is written by whichever process gets there first, so the BPE training must not vary."
    code = "from ftnb.testing import _bpe_json; import hashlib; print(hashlib.sha256(_bpe_json(512).encode()).hexdigest())"
    env = {**os.environ, 'PYTHONHASHSEED': '123'}
    other = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, env=env).stdout.strip()
    import hashlib
    assert other == hashlib.sha256(T._bpe_json(512).encode()).hexdigest()


def test_tokenizer_calls_are_independent():
    t1 = T.tiny_tokenizer(); t1.add_tokens(['<extra>'])
    assert len(T.tiny_tokenizer()) == 512 and len(t1) == 513


@pytest.mark.parametrize('arch', ['qwen2', 'llama'])
def test_saved_folder_roundtrip(arch, tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('FTNB_CACHE', str(tmp_path))
    d = T.tiny_dir(arch)
    assert d == tmp_path/f'tiny-{arch}-{T.TINY_VERSION}' and (d/'model.safetensors').is_file()
    m, tok = AutoModelForCausalLM.from_pretrained(d), AutoTokenizer.from_pretrained(d)
    ref, rtok = T.tiny_model(arch), T.tiny_tokenizer()
    assert type(m) is type(ref)
    ids = rtok('Ada has 12+34 apples.', return_tensors='pt').input_ids
    with torch.no_grad(): assert torch.equal(m(ids).logits, ref(ids).logits)
    assert tok.get_vocab() == rtok.get_vocab()
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ('<|endoftext|>', '<|im_end|>', '<|pad|>')
    assert tok.chat_template == T.CHAT_TEMPLATE
    assert m.generation_config.eos_token_id == tok.eos_token_id
    assert T.tiny_dir(arch) == d  # reused, not rebuilt


def _build(root): return str(T.tiny_dir('qwen2', root))

def test_parallel_builds_do_not_clash(tmp_path):
    with ProcessPoolExecutor(3, mp_context=get_context('spawn')) as ex:
        paths = list(ex.map(_build, [tmp_path] * 3))
    assert len(set(paths)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ['tiny-qwen2-v1']  # no temporary folders left
    AutoModelForCausalLM.from_pretrained(paths[0])


def test_chat_template_assistant_mask():
    tok = T.tiny_tokenizer()
    msgs = [{'role': 'system', 'content': 'Answer briefly.'}, {'role': 'user', 'content': 'What is 2 plus 3?'},
            {'role': 'assistant', 'content': '5'}, {'role': 'user', 'content': 'And 1 plus 1?'},
            {'role': 'assistant', 'content': 'It is 2.'}]
    out = tok.apply_chat_template(msgs, return_assistant_tokens_mask=True, return_dict=True)
    ids, mask = out['input_ids'], out['assistant_masks']
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert ids == tok(text).input_ids
    # the mask is 1 exactly on each assistant answer and the <|im_end|> that closes it
    head = tok('<|im_start|>assistant\n').input_ids
    want = [0] * len(ids)
    for ans in ['5', 'It is 2.']:
        span = tok(ans).input_ids + [tok.eos_token_id]
        starts = [i for i in range(len(ids)) if ids[i - len(head):i] == head and ids[i:i + len(span)] == span]
        assert len(starts) == 1
        want[starts[0]:starts[0] + len(span)] = [1] * len(span)
    assert mask == want
    assert sum(mask) == 2 + len(tok('It is 2.').input_ids) + 1
    gen = tok.apply_chat_template(msgs[:2], add_generation_prompt=True)
    gen = gen['input_ids'] if hasattr(gen, 'keys') else gen
    assert gen[-len(head):] == head


@pytest.mark.parametrize('name', T.TOY_NAMES)
def test_toy_files(name):
    rows = T.toy_rows(name)
    assert 50 <= len(rows) <= 2000
    for r in rows:
        assert set(r) == FIELDS[name]
        assert all(isinstance(v, (str, list)) and v for v in r.values())
    if name == 'chat':
        for r in rows:
            roles = [m['role'] for m in r['messages']]
            assert set(roles) <= {'system', 'user', 'assistant'} and roles[-1] == 'assistant'
            assert all(isinstance(m['content'], str) and m['content'] for m in r['messages'])
        assert any(len(r['messages']) >= 4 for r in rows)  # some are multi-turn
    if name == 'response': assert all('### Question: ' in r['text'] and '\n### Answer: ' in r['text'] for r in rows)
    if name.startswith('addition'):
        for r in rows:
            a, b = map(int, r['prompt'].removesuffix('=').split('+'))
            assert r['prompt'] == f'{a}+{b}=' and r['completion'] == str(a + b) and 10 <= a <= 99 and 10 <= b <= 99


def test_toy_sizes_and_split():
    assert sum(T.toy_path(n).stat().st_size for n in T.TOY_NAMES) < 400_000
    train, test = ({r['prompt'] for r in T.toy_rows(n)} for n in ('addition', 'addition_test'))
    assert len(test) == 200 and not train & test


def test_errors_name_the_fix():
    with pytest.raises(DataError, match='use one of text'): T.toy_path('nope')
    with pytest.raises(ConfigError, match='tiny-qwen2'): T.tiny_model('gpt2')


def test_demo_hparams_fit_the_schema():
    cfg = RunConfig.model_validate({'adapter': T.DEMO_HPARAMS['adapter'], 'train': T.DEMO_HPARAMS['train']})
    assert cfg.adapter.method == 'full' and cfg.train.lr == T.DEMO_HPARAMS['train']['lr']


def test_tiny_model_learns_a_little():
    "A few full-batch steps on addition lower the completion loss (the demo's machinery, in miniature)."
    torch.manual_seed(0)
    tok, m = T.tiny_tokenizer(), T.tiny_model().train()
    rows = T.toy_rows('addition')[:64]
    enc = [(tok(r['prompt']).input_ids, tok(r['completion']).input_ids + [tok.eos_token_id]) for r in rows]
    L = max(len(p) + len(c) for p, c in enc)
    ids = torch.tensor([p + c + [tok.pad_token_id] * (L - len(p) - len(c)) for p, c in enc])
    lab = torch.tensor([[-100] * len(p) + c + [-100] * (L - len(p) - len(c)) for p, c in enc])
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = m(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), labels=lab).loss
        loss.backward(); opt.step(); opt.zero_grad(); losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
