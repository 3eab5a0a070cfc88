"Integration tests for ftnb.data: exact loss masks, every bad input's error, and a real TRL SFTTrainer run."
import json, math, os, re, warnings
from collections import Counter

os.environ.setdefault('HF_HUB_OFFLINE', '1')
import pytest
import torch
from datasets import Dataset

from ftnb.config import ConfigError, DataCfg, DataError
from ftnb.data import DataWarning, detect_format, load_rows, prepare, sft_kwargs, show_sample, tokenize
from ftnb.testing import TOY_NAMES, tiny_model, tiny_tokenizer, toy_path

CHAT = [{'role': 'system', 'content': 'You add numbers.'}, {'role': 'user', 'content': '2+2='},
        {'role': 'assistant', 'content': '4'}, {'role': 'user', 'content': 'and 30+12?'},
        {'role': 'assistant', 'content': 'It is 42.'}]


@pytest.fixture(scope='module')
def tok(): return tiny_tokenizer()

def trained_runs(tok, row) -> list[str]:
    "Decoded runs of consecutive trained tokens."
    runs, cur = [], []
    for l in row['labels'] + [-100]:
        if l != -100: cur.append(l)
        elif cur: runs.append(tok.decode(cur)); cur = []
    return runs

def end_of_turn(tok) -> str:
    "The text the chat template puts right after an assistant reply's content."
    text = tok.apply_chat_template([{'role': 'user', 'content': 'u'}, {'role': 'assistant', 'content': 'XYZ'}], tokenize=False)
    return re.match(r'\S*', text.split('XYZ', 1)[1]).group(0)

def err(f, *words, cls=DataError) -> str:
    "Check that f() raises `cls` and that its message holds every word."
    with pytest.raises(cls) as e: f()
    for w in words: assert w in str(e.value), (w, str(e.value))
    return str(e.value)

def write(tmp_path, name, text):
    p = tmp_path/name; p.write_text(text); return str(p)

# ---- exact masks ---------------------------------------------------------------------------------------

def test_chat_mask_exact(tok):
    eot = end_of_turn(tok)
    assert eot, 'the tiny template should close the assistant turn with an end token'
    t = tokenize(Dataset.from_dict({'messages': [CHAT]}), tok, DataCfg(path='mem'))
    assert trained_runs(tok, t[0]) == ['4' + eot, 'It is 42.' + eot]
    row = t[0]
    assert all(l in (-100, i) for i, l in zip(row['input_ids'], row['labels']))

def test_chat_mask_fallback_matches_generation_tags(tok):
    "A template without {% generation %} goes through prefix rendering and gives the same labels."
    plain = tiny_tokenizer()
    assert re.search(r'\{%-?\s*generation', plain.chat_template)
    plain.chat_template = re.sub(r'\{%-?\s*(end)?generation\s*-?%\}', '', plain.chat_template)
    ds = Dataset.from_dict({'messages': [CHAT, CHAT[:3]]})
    a, b = tokenize(ds, tok, DataCfg(path='mem')), tokenize(ds, plain, DataCfg(path='mem'))
    assert a.to_list() == b.to_list()

def test_conversational_prompt_completion_masks_prompt(tok):
    t = tokenize(Dataset.from_list([{'prompt': CHAT[:4], 'completion': CHAT[4:]}]), tok, DataCfg(path='mem'))
    assert trained_runs(tok, t[0]) == ['It is 42.' + end_of_turn(tok)]

def test_response_template_mask_exact(tok):
    rows = Dataset.from_dict({'text': ['Q: 30+12\n### Answer: 42', 'Q: 2+2\n### Answer:4\n### Answer: x']})
    t = tokenize(rows, tok, DataCfg(path='mem', response_template='### Answer:'))
    assert trained_runs(tok, t[0]) == [' 42' + tok.eos_token]
    assert trained_runs(tok, t[1]) == ['4\n### Answer: x' + tok.eos_token]  # first occurrence only
    assert t[0]['input_ids'][-1] == tok.eos_token_id
    # a template ending in a space still trains the first answer token, whatever merges with the space
    t = tokenize(rows.select([0]), tok, DataCfg(path='mem', response_template='### Answer: '))
    assert tok.decode([l for l in t[0]['labels'] if l != -100]).strip() == '42' + tok.eos_token

def test_prompt_completion_strings_exact(tok):
    t = tokenize(Dataset.from_dict({'prompt': ['30+12='], 'completion': ['42']}), tok, DataCfg(path='mem'))
    assert trained_runs(tok, t[0]) == ['42' + tok.eos_token]
    assert tok.decode(t[0]['input_ids']) == '30+12=42' + tok.eos_token

def test_completion_only_false_trains_everything(tok):
    for rows in ({'messages': [CHAT]}, {'prompt': ['1+1='], 'completion': ['2']}, {'text': ['Q ### Answer: 2']}):
        t = tokenize(Dataset.from_dict(rows), tok, DataCfg(path='mem', completion_only=False))
        assert t[0]['labels'] == t[0]['input_ids']

def test_text_without_template_trains_all_and_ends_with_eos(tok):
    t = tokenize(Dataset.from_dict({'text': ['hello world']}), tok, DataCfg(path='mem'))
    assert t[0]['labels'] == t[0]['input_ids'] and t[0]['input_ids'][-1] == tok.eos_token_id

# ---- loading -------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', TOY_NAMES)
def test_toys_load_and_prepare(tok, name):
    cfg = DataCfg(path=f'toy:{name}', response_template='### Answer:' if name == 'response' else None)
    ds = load_rows(cfg)
    assert len(ds) > 0 and detect_format(ds, cfg) in ('text', 'prompt_completion', 'messages')
    if name == 'response': assert detect_format(ds, cfg) == 'text'  # the response_template toy is plain text
    tr, ev = prepare(cfg, tok)
    assert len(tr) > 0 and all(any(l != -100 for l in r) for r in tr['labels'])

def test_file_formats_roundtrip(tmp_path):
    rows = [{'messages': CHAT[:3], 'id': 1}, {'messages': CHAT, 'id': 2}]
    (tmp_path/'a.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    (tmp_path/'a.json').write_text(json.dumps(rows))
    (tmp_path/'b.json').write_text(json.dumps({'data': rows}))
    Dataset.from_list(rows).to_parquet(tmp_path/'a.parquet')
    for f in ('a.jsonl', 'a.json', 'b.json', 'a.parquet'):
        assert load_rows(DataCfg(path=str(tmp_path/f))).to_list() == rows, f
    (tmp_path/'c.csv').write_text('prompt,completion\n"1+1=",2\n"a, b",\n')
    assert load_rows(DataCfg(path=str(tmp_path/'c.csv'))).to_list() == [{'prompt': '1+1=', 'completion': '2'}, {'prompt': 'a, b', 'completion': ''}]

def test_prepare_split_deterministic(tok):
    cfg = DataCfg(path='toy:addition', max_samples=40, eval_fraction=0.25)
    tr, ev = prepare(cfg, tok)
    assert (len(tr), len(ev)) == (30, 10)
    tr2, ev2 = prepare(cfg, tok)
    assert tr2['input_ids'] == tr['input_ids'] and ev2['input_ids'] == ev['input_ids']
    assert prepare(cfg, tok, seed=7)[1]['input_ids'] != ev['input_ids']
    whole = prepare(cfg.model_copy(update={'eval_fraction': 0}), tok)[0]  # the same 40 rows, unsplit
    assert Counter(map(tuple, list(tr['input_ids']) + list(ev['input_ids']))) == Counter(map(tuple, whole['input_ids']))  # a partition: no row in both, none lost
    assert prepare(DataCfg(path='toy:addition', eval_fraction=0), tok)[1] is None
    tr, ev = prepare(DataCfg(path='toy:addition', max_samples=5, eval_path=str(toy_path('addition'))), tok)
    assert len(tr) == 5 and len(ev) == len(load_rows(DataCfg()))

# ---- errors: each bad input names the problem and the fix --------------------------------------------------

def test_missing_field_names_it_and_lists_fields(tok):
    rows = Dataset.from_dict({'question': ['2+2='], 'answer': ['4']})
    err(lambda: detect_format(rows, DataCfg(path='qa.jsonl', format='text', text_field='body')), 'qa.jsonl', "no field 'body'", 'question, answer', 'text_field')
    err(lambda: detect_format(rows, DataCfg(path='qa.jsonl', format='prompt_completion')), "no field 'prompt'", 'question, answer', 'prompt_field')
    err(lambda: prepare(DataCfg(path='toy:chat', format='messages', messages_field='conversation'), tok), "no field 'conversation'", 'messages')
    err(lambda: detect_format(rows, DataCfg()), 'cannot tell the format', 'question, answer')

def test_response_template_not_found(tok):
    rows = Dataset.from_dict({'text': ['Q: 2+2\n### Answer: 4', 'Q: 3+4\nAnswer: 7' + ' pad'*100, 'Q: 1+1 ###Answer: 2']})
    msg = err(lambda: tokenize(rows, tok, DataCfg(path='r.jsonl', response_template='### Answer:')),
              'r.jsonl', "response_template '### Answer:'", 'not found in 2 of 3 samples', 'sample 1', 'Q: 3+4', '...', 'Fix')
    assert len(msg) < 600  # the sample is truncated

def test_response_template_on_chat_is_config_error(tok):
    err(lambda: tokenize(Dataset.from_dict({'messages': [CHAT]}), tok, DataCfg(path='m', response_template='x')), 'response_template', 'messages', cls=ConfigError)

def test_empty_dataset(tmp_path):
    err(lambda: load_rows(DataCfg(path=write(tmp_path, 'e.jsonl', '\n\n'))), 'e.jsonl', 'empty', '0 rows')
    err(lambda: load_rows(DataCfg(path=write(tmp_path, 'e.csv', ''))), 'empty')
    err(lambda: load_rows(DataCfg(path=write(tmp_path, 'e.json', '[]'))), 'empty')

def test_unparseable_files_give_line(tmp_path):
    p = write(tmp_path, 'bad.jsonl', '{"text": "a"}\n{"text": "b"}\n{"text": "c",}\n')
    err(lambda: load_rows(DataCfg(path=p)), 'bad.jsonl', 'line 3', 'not valid JSON', 'fix or delete line 3')
    err(lambda: load_rows(DataCfg(path=write(tmp_path, 'l.jsonl', '{"text": "a"}\n["x"]\n'))), 'line 2', 'not an object')
    err(lambda: load_rows(DataCfg(path=write(tmp_path, 'bad.json', '[\n {"text": "a"},\n {"text": }\n]'))), 'bad.json', 'line 3', 'not valid JSON')
    err(lambda: load_rows(DataCfg(path=write(tmp_path, 'lines.json', '{"text": "a"}\n{"text": "b"}\n'))), 'line 2', 'rename it to .jsonl')
    err(lambda: load_rows(DataCfg(path=write(tmp_path, 'bad.csv', 'a,b\n1,2\n1,2,3\n'))), 'bad.csv', 'line 3')
    err(lambda: load_rows(DataCfg(path=write(tmp_path, 'bad.parquet', 'not parquet'))), 'bad.parquet', 'cannot parse it as parquet')
    (tmp_path/'bin.jsonl').write_bytes(b'\xff\xfe\x00garbage')
    err(lambda: load_rows(DataCfg(path=str(tmp_path/'bin.jsonl'))), 'not UTF-8')

def test_bad_sources(tmp_path):
    err(lambda: load_rows(DataCfg(path=str(tmp_path/'missing.jsonl'))), 'missing.jsonl', 'file not found', 'check the path')
    err(lambda: load_rows(DataCfg(path=write(tmp_path, 'd.txt', 'hi'))), "unknown file extension '.txt'", '.jsonl, .json, .csv, .parquet')
    err(lambda: load_rows(DataCfg(path='toy:nope')), "unknown toy dataset 'nope'", 'toy:addition', 'toy:chat')
    err(lambda: load_rows(DataCfg(path='nobody-xyz/no-such-dataset')), 'nobody-xyz/no-such-dataset', 'cannot load it as a hub dataset', 'HF_HUB_OFFLINE')

def _strict_tok():
    t = tiny_tokenizer()
    t.chat_template = ("{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}{{ raise_exception('roles must be user or assistant') }}"
                       "{% endif %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}")
    return t

def test_bad_rows(tok):
    err(lambda: tokenize(Dataset.from_dict({'text': ['ok', None]}), tok, DataCfg(path='t')), 'sample 1', "'text'", 'not a string')
    err(lambda: tokenize(Dataset.from_dict({'messages': [['hi']]}), tok, DataCfg(path='t')), 'sample 0', 'not a list of')
    err(lambda: tokenize(Dataset.from_dict({'messages': [[{'role': 'user', 'content': 'a'}, {'role': 'wizard', 'content': 'b'}]]}), _strict_tok(), DataCfg(path='t')),
        'sample 0', 'chat template rejected it', 'roles')
    assert len(tokenize(Dataset.from_dict({'messages': [json.dumps(CHAT)]}), tok, DataCfg(path='t'))) == 1  # JSON text is parsed
    no_asst = Dataset.from_dict({'messages': [CHAT, CHAT[:2]]})
    err(lambda: tokenize(no_asst, tok, DataCfg(path='t')), '1 of 2 samples have no assistant turn', 'completion_only=False')
    assert len(tokenize(no_asst, tok, DataCfg(path='t', completion_only=False))) == 2

def test_too_long(tok):
    rows = Dataset.from_dict({'prompt': ['1+1=', 'x ' * 60 + '=', 'y ' * 80 + '='], 'completion': ['2', '3', '4']})
    msg = err(lambda: tokenize(rows, tok, DataCfg(path='t', max_length=16, too_long='raise')), '2 of 3 samples are longer than max_length=16', 'longest:', "too_long='drop' or 'truncate'")
    longest = max(len(x) for x in tokenize(rows, tok, DataCfg(path='t', max_length=4096))['input_ids'])
    assert f'longest: {longest})' in msg and f'at least {longest}' in msg
    with pytest.warns(DataWarning, match='2 of 3 samples .* dropped them'):
        assert len(tokenize(rows, tok, DataCfg(path='t', max_length=16, too_long='drop'))) == 1
    with pytest.warns(DataWarning, match='truncated them, and dropped 2 that had no trained token left'):
        assert len(tokenize(rows, tok, DataCfg(path='t', max_length=16, too_long='truncate'))) == 1
    with pytest.warns(DataWarning, match='truncated them$'):
        t = tokenize(rows, tok, DataCfg(path='t', max_length=16, completion_only=False))
    assert [len(x) <= 16 for x in t['input_ids']] == [True]*3
    err(lambda: tokenize(rows.select([1, 2]), tok, DataCfg(path='t', max_length=16, too_long='drop')), 'all 2 samples are longer')

def _targets(pieces_ids, pieces_labels, step):
    "Document positions each piece trains, after the causal shift (a row's position 0 is never a target)."
    return Counter(k * step + j for k, lab in enumerate(pieces_labels) for j, l in enumerate(lab) if j and l != -100)

@pytest.mark.parametrize('overlap', [0, 1, 7])
def test_too_long_split(tok, overlap):
    "too_long='split': pieces <= max_length cover the text, share `overlap` masked tokens, and train each token once."
    text, M = ' '.join(f'w{i}' for i in range(50)), 32
    whole = tokenize(Dataset.from_dict({'text': [text]}), tok, DataCfg(path='t', max_length=4096))[0]['input_ids']
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # splitting as asked is silent
        t = tokenize(Dataset.from_dict({'text': [text]}), tok, DataCfg(path='t', max_length=M, too_long='split', overlap=overlap))
    ids, labels, step = t['input_ids'], t['labels'], M - overlap
    assert len(whole) > 3 * M and all(len(x) <= M for x in ids) and len(ids) == math.ceil((len(whole) - overlap) / step)
    assert [x for k, p in enumerate(ids) for x in (p if k == 0 else p[overlap:])] == whole  # nothing lost, nothing doubled
    for k in range(1, len(ids)):
        assert ids[k][:overlap] == ids[k - 1][-overlap:] if overlap else True
        assert labels[k][:overlap] == [-100] * overlap
    assert [l for lab in labels for l in lab if l != -100] == whole  # every token is a label once
    got = _targets(ids, labels, step)
    assert max(got.values()) == 1
    lost = set(range(1, len(whole))) - set(got)  # tokens no piece predicts
    assert lost == (set() if overlap else {k * M for k in range(1, len(ids))})  # overlap=0: each later piece's first token

def test_too_long_split_refuses_chat_and_drops_bare_pieces(tok):
    err(lambda: tokenize(Dataset.from_dict({'messages': [CHAT]}), tok, DataCfg(path='t', max_length=8, too_long='split')),
        "data.too_long='split'", 'only plain text', 'messages', "'truncate' or 'drop'", cls=ConfigError)
    rows = Dataset.from_dict({'prompt': ['x ' * 40], 'completion': ['4']})
    err(lambda: tokenize(rows, tok, DataCfg(path='t', max_length=16, too_long='split')), 'prompt_completion', cls=ConfigError)
    text = Dataset.from_dict({'text': ['Q: ' + 'x ' * 40 + '\n### Answer: 4']})  # the first pieces hold only the masked question
    with pytest.warns(DataWarning, match=r'split them, and dropped \d+ pieces that had no trained token'):
        t = tokenize(text, tok, DataCfg(path='t', max_length=16, too_long='split', response_template='### Answer:'))
    assert len(t) >= 1 and all(any(l != -100 for l in lab) for lab in t['labels'])
    assert tok.decode([l for l in t['labels'][-1] if l != -100]) == ' 4' + tok.eos_token

# ---- show_sample --------------------------------------------------------------------------------------------

def test_show_sample_html(tok):
    t = tokenize(Dataset.from_dict({'messages': [CHAT + [{'role': 'user', 'content': '<script>&</script>'}, {'role': 'assistant', 'content': 'ok'}]]}), tok, DataCfg(path='m'))
    v = show_sample(t, tok)
    n = sum(l != -100 for l in t[0]['labels'])
    assert (v.n_trained, v.n_masked) == (n, len(t[0]['labels']) - n)
    h = v._repr_html_()
    assert f'{n} trained / {len(t[0]["labels"]) - n} masked' in h
    assert h.count('<span title=') == len(t[0]['input_ids'])
    assert '<script>' not in h and '&lt;' in h and '&amp;' in h
    assert 'outline' in h and 'trained' in h and 'masked' in h  # special tokens and the legend
    assert '⟦4' in repr(v)
    assert show_sample(t[0], tok).n_trained == n

# ---- TRL SFTTrainer: packing and padding-free keep our masks, and train -------------------------------------------

def _trainer(tok, tr, cfg, tmp_path):
    from trl import SFTConfig, SFTTrainer
    args = SFTConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
                     report_to='none', save_strategy='no', use_cpu=True, seed=0, **sft_kwargs(cfg))
    return SFTTrainer(model=tiny_model(), args=args, train_dataset=tr, processing_class=tok)

def _trained_tokens(ds) -> Counter:
    return Counter(l for row in ds['labels'] for l in row if l != -100)

def _finite_losses(trainer):
    losses = [h['loss'] for h in trainer.state.log_history if 'loss' in h]
    assert losses and all(math.isfinite(l) for l in losses), trainer.state.log_history

def test_sft_packing_keeps_labels_and_trains(tok, tmp_path):
    cfg = DataCfg(path='toy:chat', packing=True, max_length=256, eval_fraction=0)
    tr, _ = prepare(cfg, tok)
    trainer = _trainer(tok, tr, cfg, tmp_path)
    packed = trainer.train_dataset
    assert 'seq_lengths' in packed.column_names and len(packed) < len(tr)
    assert _trained_tokens(packed) == _trained_tokens(tr)  # every trained token survives packing, no masked one is unmasked
    assert sum(map(len, packed['input_ids'])) == sum(map(len, tr['input_ids']))
    assert sorted(l for s in packed['seq_lengths'] for l in s) == sorted(map(len, tr['input_ids']))  # BFD never splits a sample
    batch = next(iter(trainer.get_train_dataloader()))
    assert 'attention_mask' not in batch and batch['input_ids'].shape[0] == 1  # bfd packing is padding-free
    trainer.train()
    _finite_losses(trainer)

def test_sft_padding_free_keeps_labels_and_trains(tok, tmp_path):
    cfg = DataCfg(path='toy:chat', padding_free=True, eval_fraction=0)
    tr, _ = prepare(cfg, tok)
    trainer = _trainer(tok, tr, cfg, tmp_path)
    assert _trained_tokens(trainer.train_dataset) == _trained_tokens(tr)
    rows = tr.select(range(4)).to_list()
    batch = trainer.data_collator(rows)
    assert batch['labels'][0].tolist() == [l for r in rows for l in r['labels']]  # first token of each sample is masked already
    trainer.train()
    _finite_losses(trainer)

def test_padding_free_does_not_mix_samples(tok, tmp_path):
    "SFTTrainer's loss on a flattened batch equals its loss on the padded batch: samples do not attend to each other."
    # transformers builds a block mask from the position ids only when no KV cache is made: SFTTrainer.compute_loss
    # passes use_cache=False. A plain model(...) call with the default use_cache=True would let samples see each other.
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
    cfg = DataCfg(path='toy:chat', padding_free=True, eval_fraction=0, max_samples=4)
    tr, _ = prepare(cfg, tok)
    trainer, rows = _trainer(tok, tr, cfg, tmp_path), tr.to_list()
    model = trainer.model.eval()
    flat = trainer.data_collator(rows)
    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    assert flat['input_ids'].shape[0] == 1 and padded['input_ids'].shape[0] == 4
    with torch.no_grad():
        a, b = trainer.compute_loss(model, dict(flat)), trainer.compute_loss(model, dict(padded))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

def test_sft_plain_keeps_labels(tok, tmp_path):
    cfg = DataCfg(path='toy:addition', max_samples=16, eval_fraction=0)
    tr, _ = prepare(cfg, tok)
    trainer = _trainer(tok, tr, cfg, tmp_path)
    assert trainer.train_dataset['labels'] == tr['labels']
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch['labels'] != -100).sum() > 0 and 'attention_mask' in batch

def test_jsonl_with_bom_is_read(tmp_path):
    p = tmp_path/'bom.jsonl'; p.write_bytes('{"prompt": "1+1=", "completion": "2"}\n{"prompt": "2+2=", "completion": "4"}\n'.encode('utf-8-sig'))
    assert load_rows(DataCfg(path=str(p)))['prompt'] == ['1+1=', '2+2=']

@pytest.mark.parametrize('text', ['[{"text": "a"}, {"text": "b"}]\n', '[\n  {"text": "a"},\n  {"text": "b"}\n]\n'])
def test_json_array_named_jsonl_says_rename(tmp_path, text):
    p = tmp_path/'rows.jsonl'; p.write_text(text)
    err(lambda: load_rows(DataCfg(path=str(p))), 'one JSON array of 2 items', 'rename it to rows.json')

def test_dataset_folder_with_dot_slash(tmp_path, monkeypatch):
    (tmp_path/'ds').mkdir()
    (tmp_path/'ds'/'train.jsonl').write_text('{"text": "a"}\n{"text": "b"}\n')
    monkeypatch.chdir(tmp_path)
    assert [len(load_rows(DataCfg(path=p))) for p in ('ds', './ds', str(tmp_path/'ds'))] == [2, 2, 2]
    err(lambda: load_rows(DataCfg(path='./dz')), './dz', 'no such file or folder')

@pytest.mark.parametrize('row,words', [
    ({'prompt': '2+2=', 'completion': ''}, ['sample 1', 'the completion is empty']),
    ({'messages': [{'role': 'user', 'content': 'x'}, {'role': 'assistant', 'content': '  '}]}, ['sample 1', 'the assistant reply is empty']),
    ({'messages': [{'role': 'assistant', 'content': 'x'}, {'role': 'user', 'content': 'y'}, {'role': 'assistant', 'content': 'z'}]},
     ['sample 1', 'assistant -> user -> assistant', 'starts with an assistant turn']),
    ({'messages': [{'role': 'user', 'content': 'x'}, {'role': 'assistant', 'content': 'y'}, {'role': 'assistant', 'content': 'z'}]},
     ['sample 1', 'user -> assistant -> assistant', 'two assistant turns'])])
def test_rows_that_train_nothing_useful_are_refused(tok, row, words):
    good = {'prompt': '1+1=', 'completion': '2'} if 'prompt' in row else {'messages': CHAT}
    err(lambda: tokenize(Dataset.from_list([good, row]), tok, DataCfg(path='d.jsonl')), 'd.jsonl', *words)

def test_empty_completion_allowed_when_everything_trains(tok):
    t = tokenize(Dataset.from_list([{'prompt': '1+1=', 'completion': ''}]), tok, DataCfg(path='d', completion_only=False))
    assert len(t) == 1


def test_auto_format_order():
    "'auto' takes the first format whose fields are there: messages, then prompt_completion, then text."
    both = {'messages': [CHAT[:3]], 'prompt': ['a'], 'completion': ['b'], 'text': ['t']}
    assert detect_format(Dataset.from_dict(both), DataCfg()) == 'messages'
    both.pop('messages')
    assert detect_format(Dataset.from_dict(both), DataCfg()) == 'prompt_completion'
    both.pop('prompt')
    assert detect_format(Dataset.from_dict(both), DataCfg()) == 'text'

def test_hub_datasets_run_no_remote_code(monkeypatch):
    "A hub id goes through datasets.load_dataset, never with trust_remote_code (datasets>=4 runs no loading scripts)."
    import datasets
    seen = []
    def spy(*a, **k):
        seen.append(k); return Dataset.from_dict({'text': ['x']})
    monkeypatch.setattr(datasets, 'load_dataset', spy)
    assert load_rows(DataCfg(path='someone/some-set')).to_list() == [{'text': 'x'}]
    assert seen and all(not k.get('trust_remote_code') for k in seen)

# ---- chat template override ------------------------------------------------------------------------------

THINK_TEMPLATE = ("{%- if enable_thinking is defined and enable_thinking is false -%}{{- '/no_think\\n' -}}{%- endif -%}"
                  "{%- for m in messages -%}{{- '[' + m['role'] + '] ' -}}"
                  "{%- if m['role'] == 'assistant' -%}{% generation %}{{- m['content'] + '<|im_end|>' -}}{% endgeneration %}"
                  "{%- else -%}{{- m['content'] -}}{%- endif -%}{{- '\\n' -}}{%- endfor -%}"
                  "{%- if add_generation_prompt -%}{{- '[assistant] ' -}}"
                  "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<no-think> ' -}}{%- endif -%}{%- endif -%}")

def test_chat_template_override_file_and_enable_thinking(tmp_path):
    "data.chat_template (a file here) changes the tokenized sample and is kept by the tokenizer; enable_thinking reaches it."
    f = tmp_path/'think.jinja'; f.write_text(THINK_TEMPLATE)
    rows = Dataset.from_list([{'prompt': CHAT[:2], 'completion': [{'role': 'assistant', 'content': '4'}]}])
    own = tokenize(rows, tiny_tokenizer(), DataCfg(path='mem'))[0]
    t = tiny_tokenizer()
    new = tokenize(rows, t, DataCfg(path='mem', chat_template=str(f)))[0]
    assert t.chat_template == THINK_TEMPLATE and new['input_ids'] != own['input_ids']
    assert t.decode(new['input_ids']).startswith('[system] You add numbers.\n[user] 2+2=\n[assistant] 4<|im_end|>')
    assert trained_runs(t, new) == ['4<|im_end|>']
    off = tokenize(rows, t, DataCfg(path='mem', chat_template=str(f), chat_template_kwargs={'enable_thinking': False}))[0]
    on = tokenize(rows, t, DataCfg(path='mem', chat_template=str(f), chat_template_kwargs={'enable_thinking': True}))[0]
    assert on == new and t.decode(off['input_ids']) == '/no_think\n' + t.decode(new['input_ids'])  # the switch reaches the template
    assert trained_runs(t, off) == ['4<|im_end|>']

def test_chat_template_refusals(tmp_path):
    err(lambda: tokenize(Dataset.from_dict({'messages': [CHAT]}), tiny_tokenizer(), DataCfg(path='mem', chat_template=str(tmp_path/'gone.jinja'))),
        "data.chat_template=", 'gone.jinja', 'there is no file', 'existing Jinja file', cls=ConfigError)
    err(lambda: tokenize(Dataset.from_dict({'messages': [CHAT]}), tiny_tokenizer(), DataCfg(path='mem', chat_template="{{ messages[0]['content'] | nosuchfilter }}")),
        'data.chat_template=', 'it does not render', 'fix the template', cls=ConfigError)
