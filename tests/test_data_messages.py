"""Every message the data module can give, word for word, and the small helpers behind them.

Written against the survivors of a mutation run (issue 14): tests/test_data.py checks what the data pipeline builds
(masks by decoding, packing, splitting); these pin the whole text of each error about a file, a sample or a setting,
and the edges of the helpers (piece boundaries, role order, the sample view)."""
import json, warnings
from pathlib import Path
import pytest
import datasets
from ftnb import data as D
from ftnb.config import ConfigError, DataCfg, DataError

def msg(fn, err=DataError) -> str:
    with pytest.raises(err) as e: fn()
    return str(e.value)

FILES = {  # name -> (bytes, the message after "<name>: ")
    'arr.jsonl': (b'[{"a": 1}, {"a": 2}]\n', "this is one JSON array of 2 items, not JSON lines (one object per line). Fix: rename it to arr.json: ftnb reads a JSON array from a .json file"),
    'bad.jsonl': (b'{"a": 1}\n\n{"a": \n', "line 3 is not valid JSON (column 7: Expecting value): '{\"a\":'. Fix: fix or delete line 3"),
    'list.jsonl': (b'{"a": 1}\n[1, 2]\n', 'line 2 is a JSON list, not an object. Fix: write one {"field": value, ...} object per line'),
    'mixed.jsonl': (b'{"a": 1}\n{"a": "x"}\n', "a field holds different types in different rows (Could not convert 'x' with type str: tried to convert to int64). Fix: give each field one type in every row, e.g. always a string"),
    'extra.json': (b'{"a": 1}\n{"a": 2}\n', "not valid JSON at line 2, column 1: Extra data. Fix: it holds one object per line: rename it to .jsonl"),
    'bad.json': (b'{"a": [1,\n 2,, 3]}', "not valid JSON at line 2, column 4: Expecting value. Fix: fix the JSON at line 2"),
    'scalar.json': (b'5', 'the JSON is a int that is not a list of objects. Fix: write [{"field": value, ...}, ...] or {"field": [values], ...}'),
    'uneven.json': (b'{"a": [1, 2], "b": ["x"]}', 'the JSON is a dict that is not a list of objects. Fix: write [{"field": value, ...}, ...] or {"field": [values], ...}'),
    'mixedlist.json': (b'[{"a": 1}, 2]', 'the JSON is a list that is not a list of objects. Fix: write [{"field": value, ...}, ...] or {"field": [values], ...}'),
    'bad.csv': (b'a,b\n1,2\n3,4,5\n', "cannot parse it as csv: Error tokenizing data. C error: Expected 2 fields in line 3, saw 3. Fix: check that the file is valid csv"),
    'bad.parquet': (b'nope', "cannot parse it as parquet: Could not open Parquet input source 'bad.parquet': Parquet file size is 4 bytes, smaller than the minimum file footer (8 bytes). Fix: check that the file is valid parquet"),
    'latin.jsonl': ('{"a": "caf\xe9"}\n'.encode('latin-1'), "not UTF-8 text (byte 10). Fix: save the file as UTF-8"),
    'x.txt': (b'x', "unknown file extension '.txt'. Fix: use one of .jsonl, .json, .csv, .parquet (convert the file, or rename it if it already is one of those)"),
}

@pytest.mark.parametrize('name', list(FILES))
def test_file_messages(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    raw, want = FILES[name]
    (tmp_path/name).write_bytes(raw)
    assert msg(lambda: D.load_rows(DataCfg(path=name))) == f'{name}: {want}'

def test_missing_files_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert msg(lambda: D.load_rows(DataCfg(path='missing.jsonl'))) == f"missing.jsonl: file not found (looked in {tmp_path}). Fix: check the path; relative paths start from the current folder {tmp_path}"
    assert msg(lambda: D.check_source('./nofile')) == f"./nofile: no such file or folder (looked in {tmp_path}). Fix: check the path; relative paths start from the current folder {tmp_path}"
    (tmp_path/'noext').write_text('x')
    assert msg(lambda: D.check_source('./noext')) == "./noext: unknown file extension '(none)'. Fix: use one of .jsonl, .json, .csv, .parquet (convert the file, or rename it if it already is one of those)"
    (tmp_path/'d.jsonl').mkdir()
    assert D._source_kind('d.jsonl') == 'hub' and D.check_source('d.jsonl') is None  # a folder, whatever its name: datasets reads it
    assert D.check_source('hub/id') is None and D.check_source('toy:text') is None
    assert msg(lambda: D.check_source('toy:nope')) == "toy:nope: unknown toy dataset 'nope'. Fix: use one of: toy:text, toy:prompt_completion, toy:chat, toy:response, toy:addition, toy:addition_test"

def test_readers_that_succeed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = {'cols.json': '{"a": [1, 2], "b": ["x", "y"]}', 'wrapped.json': '{"data": [{"a": 1}, {"a": 2}]}',
             'rows.json': '[{"a": 1}, {"b": "x"}]', 'bom.jsonl': '\ufeff{"a": 1}\r\n\n{"a": 2}\n', 'c.csv': 'a,b\n1,\n3,NA\n'}
    for n, t in files.items(): (tmp_path/n).write_text(t, encoding='utf-8')
    rows = lambda n: D.load_rows(DataCfg(path=n)).to_dict()
    assert rows('cols.json') == {'a': [1, 2], 'b': ['x', 'y']} and rows('wrapped.json') == {'a': [1, 2]}
    assert rows('rows.json') == {'a': [1, None], 'b': [None, 'x']}  # a field missing from a row is None there
    assert rows('bom.jsonl') == {'a': [1, 2]}
    assert rows('c.csv') == {'a': ['1', '3'], 'b': ['', 'NA']}  # every cell a string; pandas' NA guessing off
    datasets.Dataset.from_dict({'a': [1, 2]}).to_parquet(str(tmp_path/'p.parquet'))
    assert rows('p.parquet') == {'a': [1, 2]}
    assert msg(lambda: D.load_rows(DataCfg(path=str(tmp_path/'empty.csv')))).endswith('file not found (looked in ' + str(tmp_path) + '). Fix: check the path; relative paths start from the current folder ' + str(tmp_path))
    (tmp_path/'empty.csv').write_text('')
    assert msg(lambda: D.load_rows(DataCfg(path='empty.csv'))) == 'empty.csv: the dataset is empty (0 rows). Fix: point the path at a file that holds samples'

def test_hub_messages(monkeypatch):
    def fail(src, split): raise ConnectionError("Couldn't reach it")
    monkeypatch.setattr(datasets, 'load_dataset', fail)
    assert msg(lambda: D._load_hub('org/set', 'test')) == ("org/set: cannot load it as a hub dataset (split 'test'): ConnectionError: Couldn't reach it. "
        "Fix: check the id and split and that you are online (HF_HUB_OFFLINE unset), or set path to a local .jsonl/.json/.csv/.parquet file")
    monkeypatch.setattr(datasets, 'load_dataset', lambda src, split: datasets.DatasetDict({'train': datasets.Dataset.from_dict({'a': [1]})}))
    assert msg(lambda: D._load_hub('org/set', None)) == "org/set: split None did not give one table but a DatasetDict. Fix: set DataCfg.split, e.g. 'train'"
    got = {}
    def ok(src, split): got.update(src=src, split=split); return datasets.Dataset.from_dict({'a': [1]})
    monkeypatch.setattr(datasets, 'load_dataset', ok)
    assert D._load_hub('org/set', 'train').to_dict() == {'a': [1]} and got == {'src': 'org/set', 'split': 'train'}

def test_sample_messages():
    assert msg(lambda: D._check_str(5, 'text', 3, 's')) == "s: sample 3: field 'text' is int '5', not a string. Fix: fix or remove that sample"
    assert msg(lambda: D._check_str(['a' * 70], 'p', 0, 's')) == "s: sample 0: field 'p' is list \"['" + 'a' * 58 + "\", not a string. Fix: fix or remove that sample"
    assert D._check_str('ok', 'text', 0, 's') == 'ok'
    shape = "is not a list of {'role': ..., 'content': ...} messages"
    assert msg(lambda: D._check_msgs('[not json', 'm', 1, 's')) == f"s: sample 1: field 'm' {shape}: '[not json'. Fix: fix or remove that sample"
    assert msg(lambda: D._check_msgs([{'content': 'x'}], 'm', 1, 's')) == f"s: sample 1: field 'm' {shape}: \"[{{'content': 'x'}}]\". Fix: fix or remove that sample"
    assert msg(lambda: D._check_msgs([], 'm', 2, 's')) == f"s: sample 2: field 'm' {shape}: '[]'. Fix: fix or remove that sample"
    assert D._check_msgs(' [{"role": "user", "content": "hi"}]', 'm', 1, 's') == [{'role': 'user', 'content': 'hi'}]  # JSON text
    assert D._check_msgs([{'role': 'user', 'content': 'x', 'tool_calls': None}], 'm', 1, 's') == [{'role': 'user', 'content': 'x'}]
    order = 'Fix: fix that sample so turns go user, assistant, user, ... (a system message may come first), or remove it'
    assert msg(lambda: D._check_roles([{'role': 'system'}, {'role': 'assistant'}], 2, 's')) == \
        f"s: sample 2: the roles are out of order (system -> assistant): it starts with an assistant turn (no user turn before it). {order}"
    assert msg(lambda: D._check_roles([{'role': 'user'}, {'role': 'assistant'}, {'role': 'assistant'}], 2, 's')) == \
        f"s: sample 2: the roles are out of order (user -> assistant -> assistant): two assistant turns follow each other. {order}"
    assert D._check_roles([{'role': 'system'}, {'role': 'assistant'}], 2, 's', whole=False) is None  # a completion alone may start with it
    assert D._check_roles([{'role': 'developer'}, {'role': 'user'}, {'role': 'assistant'}], 2, 's') is None
    assert msg(lambda: D._check_reply('  ', 4, 's')) == "s: sample 4: the completion is empty '  ', so it would train only on the end-of-text token. Fix: write the completion, or remove that sample"
    assert msg(lambda: D._checked_chat([{'role': 'user', 'content': 'q'}, {'role': 'assistant', 'content': ' '}], 5, 's')) == \
        "s: sample 5: the assistant reply is empty ' ', so it would train only on the end-of-text token. Fix: write the assistant reply, or remove that sample"
    tool = [{'role': 'user', 'content': 'q'}, {'role': 'assistant', 'content': '', 'tool_calls': [{'x': 1}]}]
    assert D._checked_chat(tool, 5, 's') == tool  # a tool call may come with no text

def test_tokenizer_and_template_messages(tmp_path):
    class NoEos: eos_token_id = None
    assert msg(lambda: D._eos_id(NoEos()), ConfigError) == ("tokenizer.eos_token=None: the tokenizer has no eos token, so samples cannot end. "
                                                            "Fix: set tok.eos_token (e.g. to the model's end-of-text token)")
    class Eos: eos_token_id = 0
    assert D._eos_id(Eos()) == 0  # id 0 is an eos like any other
    assert msg(lambda: D._template_text(str(tmp_path/'no.jinja')), ConfigError) == (f"data.chat_template={str(tmp_path/'no.jinja')!r}: there is no file "
        f"{str(tmp_path/'no.jinja')!r}. Fix: give the path of an existing Jinja file, or the template text itself (with its {{% ... %}} and {{{{ ... }}}} tags)")
    (tmp_path/'t.jinja').write_text('{{ messages }}')
    assert D._template_text(str(tmp_path/'t.jinja')) == '{{ messages }}' and D._template_text('{% if x %}{% endif %}') == '{% if x %}{% endif %}'

def test_split_sample_edges():
    assert D.split_sample(list(range(10)), list(range(10)), 4, 1) == [([0, 1, 2, 3], [0, 1, 2, 3]), ([3, 4, 5, 6], [-100, 4, 5, 6]), ([6, 7, 8, 9], [-100, 7, 8, 9])]
    assert D.split_sample(list(range(8)), list(range(8)), 4) == [([0, 1, 2, 3], [0, 1, 2, 3]), ([4, 5, 6, 7], [4, 5, 6, 7])]  # exactly two pieces
    assert D.split_sample([1, 2], [1, 2], 4, 3) == [([1, 2], [1, 2])]
    assert D.split_sample(list(range(5)), list(range(5)), 4, 2) == [([0, 1, 2, 3], [0, 1, 2, 3]), ([2, 3, 4], [-100, -100, 4])]
    for bad in (4, 5, -1):
        assert msg(lambda: D.split_sample([1], [1], 4, bad), ConfigError) == f"data.overlap={bad}: each piece must bring new tokens. Fix: make it smaller than data.max_length (4)"
    assert D._prefix_len([1, 2, 3], [1, 2, 4]) == 2 and D._prefix_len([1, 2], [1, 2, 3]) == 2 and D._prefix_len([], [1]) == 0 and D._prefix_len([5], [5]) == 1

def test_sft_kwargs():
    base = {'packing_strategy': 'bfd', 'completion_only_loss': False, 'assistant_only_loss': False}
    assert D.sft_kwargs(DataCfg(max_length=77)) == {**base, 'max_length': 77, 'packing': False, 'padding_free': False}
    assert D.sft_kwargs(DataCfg(max_length=77, padding_free=True)) == {**base, 'max_length': None, 'packing': False, 'padding_free': True}
    assert D.sft_kwargs(DataCfg(max_length=77, padding_free=True, packing=True)) == {**base, 'max_length': 77, 'packing': True, 'padding_free': True}
    assert D.sft_kwargs(DataCfg(max_length=77, packing=True)) == {**base, 'max_length': 77, 'packing': True, 'padding_free': False}

def test_sample_view_text_and_html():
    v = D.SampleView(['a', '\n', 'b\t', 'c<'], [False, True, True, False], [True, False, False, False], [1, 2, 3, 4])
    assert (v.n_trained, v.n_masked) == (2, 2)
    assert repr(v) == '2 trained / 2 masked\na⟦\nb\t⟧c<'
    assert v._repr_html_() == ('<div style="font-family:monospace;font-size:13px"><div style="margin-bottom:4px">'
        '<span style="background:#b9f3b0;color:#111">&nbsp;trained&nbsp;</span> <span style="background:#ececec;color:#888">&nbsp;masked (-100)&nbsp;</span> '
        '<span style="background:#ececec;color:#888;outline:1px dashed #555;font-weight:bold">special</span> &nbsp;<b>2 trained / 2 masked</b></div>'
        '<div style="white-space:pre-wrap;line-height:1.8">'
        '<span title="#0 id 1 · masked" style="background:#ececec;color:#888;outline:1px dashed #555;font-weight:bold">a</span>'
        '<span title="#1 id 2 · trained" style="background:#9fe08f;color:#111">↵\n</span>'
        '<span title="#2 id 3 · trained" style="background:#b9f3b0;color:#111">b→\t</span>'
        '<span title="#3 id 4 · masked" style="background:#dadada;color:#777">c&lt;</span></div></div>')
    assert repr(D.SampleView(['a', 'b'], [True, True], [False, False], [1, 2])) == '2 trained / 0 masked\n⟦ab⟧'
    assert repr(D.SampleView(['a', 'b'], [False, True], [False, False], [1, 2])) == '1 trained / 1 masked\na⟦b⟧'

def test_chat_template_messages():
    from ftnb.testing import tiny_tokenizer
    msgs = [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'yo'}]
    tok = tiny_tokenizer(); tok.chat_template = None
    assert msg(lambda: D._encode_chat(tok, msgs, 'chat.jsonl')) == ("chat.jsonl: the tokenizer has no chat template, so chat messages cannot be rendered. "
        "Fix: use a chat model's tokenizer, set tok.chat_template, or give the samples as text")
    tok.chat_template = '{% for m in messages %}{{ m.content }}|{% endfor %}{{ messages | length }}'  # the count at the end changes every prefix
    assert msg(lambda: D._encode_chat(tok, msgs, 'chat.jsonl')) == ("chat.jsonl: the chat template renders a conversation prefix differently from the "
        "full conversation, so assistant turns cannot be located. Fix: use a template with {% generation %} tags, or set completion_only=False to train on every token")
    # the template's switches reach every rendering: the spans are found with them, and the text is rendered with them
    tok.chat_template = "{% for m in messages %}{% if m.role == 'assistant' and think %}<t>{% endif %}{{ m.content }}\n{% endfor %}"
    ids, tr = D._encode_chat(tok, msgs, 's', think=True)
    assert tok.decode(ids) == tok.apply_chat_template(msgs, tokenize=False, think=True) and '<t>' in tok.decode(ids)
    assert '<t>' in tok.decode([i for i, t in zip(ids, tr) if t]) and 'hi' not in tok.decode([i for i, t in zip(ids, tr) if t])

def test_prepare_splits_and_eval_files(tmp_path):
    from ftnb.testing import tiny_tokenizer
    tok = tiny_tokenizer()
    train, ev = D.prepare(DataCfg(path='toy:prompt_completion', max_samples=20, eval_fraction=0.25), tok)
    assert (len(train), len(ev)) == (15, 5)
    assert D.prepare(DataCfg(path='toy:prompt_completion', max_samples=20, eval_fraction=0), tok)[1] is None
    assert [len(x) for x in D.prepare(DataCfg(path='toy:prompt_completion', max_samples=2, eval_fraction=0.1), tok)] == [1, 1]  # at least one
    assert D.prepare(DataCfg(path='toy:prompt_completion', max_samples=1, eval_fraction=0.5), tok)[1] is None  # one sample: nothing to hold out
    rows = [{'prompt': f'{i}+1=', 'completion': f' {i + 1}'} for i in range(3)]
    (tmp_path/'ev.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    train, ev = D.prepare(DataCfg(path='toy:prompt_completion', max_samples=8, eval_path=str(tmp_path/'ev.jsonl')), tok)
    assert (len(train), len(ev)) == (8, 3) and tok.decode(ev[0]['input_ids']).startswith('0+1=')
    (tmp_path/'bad.jsonl').write_text(json.dumps({'prompt': 5, 'completion': 'x'}) + '\n')
    assert msg(lambda: D.prepare(DataCfg(path='toy:prompt_completion', max_samples=8, eval_path=str(tmp_path/'bad.jsonl')), tok)).startswith(
        f"{tmp_path/'bad.jsonl'}: sample 0: field 'prompt' is int '5', not a string")  # the eval file is named, not the train set

def test_split_drops_pieces_without_a_trained_token_and_says_how_many():
    from ftnb.testing import tiny_tokenizer
    import warnings
    tok = tiny_tokenizer()
    cfg = DataCfg(path='s', format='text', response_template='###', max_length=8, too_long='split')
    ds = datasets.Dataset.from_dict({'text': ['a b c d e f g h i j k l m n o p q r s t ### u v']})
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        out = D.tokenize(ds, tok, cfg)
    ids = D.tokenize(ds, tok, DataCfg(path='s', format='text', response_template='###', max_length=512))[0]
    pieces = D.split_sample(ids['input_ids'], ids['labels'], 8)
    kept = [p for p in pieces if any(l != -100 for l in p[1])]
    assert len(out) == len(kept) < len(pieces)
    assert [str(x.message) for x in w if issubclass(x.category, D.DataWarning)] == [
        f"s: 1 of 1 samples are longer than max_length=8 tokens (longest: {len(ids['input_ids'])}): split them, and dropped {len(pieces) - len(kept)} pieces that had no trained token"]

# ---- after the partial mutation run of 2026-12-03: the survivors' edges, and two bugs they led to ------------------------------

def _tok(template=None, post=None):
    "The tiny tokenizer, with another chat template or an extra post-processor (a BOS or EOS that the tokenizer adds itself)."
    from ftnb.testing import tiny_tokenizer
    from tokenizers import processors
    t = tiny_tokenizer()
    if template is not None: t.chat_template = template
    if post: t._tokenizer.post_processor = processors.Sequence([t._tokenizer.post_processor, processors.TemplateProcessing(single=post[0], special_tokens=post[1])])
    return t

def _runs(tok, ids, trained) -> list[str]:
    "Decoded runs of consecutive trained tokens."
    out, cur = [], []
    for i, t in zip(list(ids) + [None], list(trained) + [False]):
        if t: cur.append(i)
        elif cur: out.append(tok.decode(cur)); cur = []
    return out

def _label_runs(tok, row) -> list[str]: return _runs(tok, row['input_ids'], [l != -100 for l in row['labels']])

U = lambda c: {'role': 'user', 'content': c}
A = lambda c: {'role': 'assistant', 'content': c}

def test_json_readers_edges(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path/'one.json').write_text('{"text": ["a", "b"]}')  # {field: [values]} with one field: a column, not rows (was refused)
    assert D.load_rows(DataCfg(path='one.json')).to_dict() == {'text': ['a', 'b']}
    (tmp_path/'bom.json').write_bytes('[{"a": 1}]'.encode('utf-8-sig'))
    assert D.load_rows(DataCfg(path='bom.json')).to_dict() == {'a': [1]}
    rename = lambda n, k: f"{n}.jsonl: this is one JSON array of {k} items, not JSON lines (one object per line). Fix: rename it to {n}.json: ftnb reads a JSON array from a .json file"
    (tmp_path/'bom.jsonl').write_bytes('[{"a": 1}]\n'.encode('utf-8-sig'))
    assert msg(lambda: D.load_rows(DataCfg(path='bom.jsonl'))) == rename('bom', 1)
    (tmp_path/'ind.jsonl').write_text('  [{"a": 1},\n {"a": 2}]\n')  # indented
    assert msg(lambda: D.load_rows(DataCfg(path='ind.jsonl'))) == rename('ind', 2)
    (tmp_path/'long.jsonl').write_text('{"text": "' + 'x' * 100 + '"\n')  # the line is shown up to 80 characters
    assert msg(lambda: D.load_rows(DataCfg(path='long.jsonl'))) == \
        "long.jsonl: line 1 is not valid JSON (column 112: Expecting ',' delimiter): '{\"text\": \"" + 'x' * 70 + "'. Fix: fix or delete line 1"
    mixed = "a field holds different types in different rows (Could not convert 'y' with type str: tried to convert to int64). Fix: give each field one type in every row, e.g. always a string"
    (tmp_path/'rows.json').write_text(json.dumps([{'a': 1}, {'a': 'y'}]))
    (tmp_path/'cols.json').write_text(json.dumps({'a': [1, 'y'], 'b': [1, 2]}))
    assert [msg(lambda: D.load_rows(DataCfg(path=n))) for n in ('rows.json', 'cols.json')] == [f'rows.json: {mixed}', f'cols.json: {mixed}']
    (tmp_path/'big.json').write_text(json.dumps([{'a': 1}, {'a': 'y' * 300}]))  # arrow's message is cut at 160 characters
    with pytest.raises(DataError) as e: D.load_rows(DataCfg(path='big.json'))
    assert e.value.problem == "a field holds different types in different rows (Could not convert '" + 'y' * 141 + ")"

def test_long_library_messages_are_cut(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = 'p' * 120 + '.parquet'  # pyarrow names the file in its message: 200 characters of it are kept
    (tmp_path/name).write_bytes(b'nope')
    with pytest.raises(DataError) as e: D.load_rows(DataCfg(path=name))
    head = 'cannot parse it as parquet: '
    assert e.value.problem.startswith(head + f"Could not open Parquet input source '{name}'") and len(e.value.problem) == len(head) + 200
    def fail(src, split): raise ConnectionError('z' * 300)
    monkeypatch.setattr(datasets, 'load_dataset', fail)
    with pytest.raises(DataError) as e: D.load_rows(DataCfg(path='org/set'))
    assert e.value.problem == "cannot load it as a hub dataset (split 'train'): ConnectionError: " + 'z' * 200

def test_source_kinds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert msg(lambda: D.check_source('missing.txt')) == "missing.txt: unknown file extension '.txt'. Fix: use one of .jsonl, .json, .csv, .parquet (convert the file, or rename it if it already is one of those)"
    for src, where in (('/nowhere/data', '/nowhere'), ('~/ftnb-no-such-file', str(Path.home()))):  # absolute and home paths are files, not hub ids
        assert msg(lambda: D.check_source(src)) == f"{src}: no such file or folder (looked in {where}). Fix: check the path; relative paths start from the current folder {tmp_path}"
    assert [D._source_kind(s) for s in ('org/set', 'toy:chat', 'a.jsonl', 'notes.md')] == ['hub', 'toy', 'file', 'file']

def test_sample_checks_edges():
    assert msg(lambda: D._check_msgs('[' + 'q' * 100, 'm', 1, 's')) == \
        "s: sample 1: field 'm' is not a list of {'role': ..., 'content': ...} messages: '[" + 'q' * 79 + "'. Fix: fix or remove that sample"
    assert D._check_roles([{'role': 'system'}], 0, 's') is None and D._check_roles([{'role': 'developer'}, {'role': 'system'}], 0, 's') is None

def test_response_template_not_found_messages():
    tok = _tok()
    T = lambda texts, rt: D.tokenize(datasets.Dataset.from_dict({'text': texts}), tok, DataCfg(path='d.jsonl', response_template=rt))
    fix = 'Fix: copy the marker exactly as it appears in the text (spaces and newlines count), or set response_template=None to train on the whole text'
    assert msg(lambda: T(['Q ### Answer: 4', 'Q ### Answer:4'], '### Answer: ')) == \
        f"d.jsonl: response_template '### Answer: ' was not found in 1 of 2 samples (it appears with other spaces around it); e.g. sample 1: 'Q ### Answer:4'. {fix}"
    assert msg(lambda: T(['a' * 200], '###')) == f"d.jsonl: response_template '###' was not found in 1 of 1 samples; e.g. sample 0: '{'a' * 200}'. {fix}"
    assert msg(lambda: T(['b' * 201], '###')) == f"d.jsonl: response_template '###' was not found in 1 of 1 samples; e.g. sample 0: '{'b' * 200}'.... {fix}"

def test_no_assistant_turn_message():
    rows = [{'messages': [U('hi'), A('yo')]}, {'messages': [U('hi'), A('yo')]}, {'messages': [U('w' * 300)]}]
    head = "{'messages': [{'role': 'user', 'content': '"  # the sample, cut at 200 characters
    assert msg(lambda: D.tokenize(datasets.Dataset.from_list(rows), _tok(), DataCfg(path='c.jsonl'))) == (
        f"c.jsonl: 1 of 3 samples have no assistant turn to train on, e.g. sample 2: {head}{'w' * (200 - len(head))}. "
        "Fix: remove those samples (each needs an assistant reply), or set completion_only=False to train on every token")

def test_text_eos_is_trained_once():
    "The eos ends every text sample once and is trained, also when the text holds it or the tokenizer appends it itself."
    tok = _tok()
    T = lambda t, rows, **kw: D.tokenize(datasets.Dataset.from_list(rows), t, DataCfg(path='d', **kw))[0]
    row = T(tok, [{'text': 'hello' + tok.eos_token}])
    assert row['input_ids'].count(tok.eos_token_id) == 1 and row['input_ids'][-1] == tok.eos_token_id
    row = T(tok, [{'text': 'hi' + tok.eos_token + ' ### A: 4' + tok.eos_token}], response_template='### A:')
    assert row['input_ids'].count(tok.eos_token_id) == 2 and _label_runs(tok, row) == [' 4' + tok.eos_token]
    row = T(tok, [{'text': '>hi there'}], response_template='>')  # a boundary at character 1: the first token stays masked
    assert _label_runs(tok, row) == ['hi there' + tok.eos_token]
    eos = _tok(post=('$A <|im_end|>', [('<|im_end|>', tok.eos_token_id)]))  # like a Llama tokenizer with add_eos_token=True
    assert eos('hi')['input_ids'][-1] == tok.eos_token_id and eos('hi', return_offsets_mapping=True)['offset_mapping'][-1] == (0, 0)
    row = T(eos, [{'text': 'Q ### A: 42'}], response_template='### A:')
    assert row['input_ids'].count(tok.eos_token_id) == 1 and _label_runs(eos, row) == [' 42' + tok.eos_token]  # its eos was left untrained
    row = T(eos, [{'prompt': '2+2=', 'completion': '4'}])
    assert row['input_ids'].count(tok.eos_token_id) == 1 and _label_runs(eos, row) == ['4' + tok.eos_token]

LAST_DOT = "{% for m in messages %}{{ m.content }}{% if loop.last and m.role == 'assistant' %}.{% else %}|{% endif %}{% endfor %}"
SWITCH = ("{% if terse %}[terse]{{ '\\n' }}{% endif %}{% for m in messages %}{% if m.role == 'assistant' %}A: {% generation %}{{ m.content + '<|im_end|>' }}"
          "{% endgeneration %}{{ '\\n' }}{% else %}U: {{ m.content + '\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}A: {% endif %}")
PLAIN = SWITCH.replace('{% generation %}', '').replace('{% endgeneration %}', '')  # the same text, no {% generation %} tags

def test_assistant_spans_need_every_prefix_to_agree():
    "A template that ends the last assistant turn differently (here '.' instead of '|') renders prefixes that the full chat does not start with."
    conv = [U('hi'), A('yo'), U('q'), A('ok')]
    tok = _tok(LAST_DOT)
    assert D._render(tok, conv) == 'hi|yo|q|ok.' and D._render(tok, conv[:2]) == 'hi|yo.'
    assert D._assistant_spans(tok, conv) is None
    assert msg(lambda: D._encode_chat(tok, conv, 'c')).startswith('c: the chat template renders a conversation prefix differently')
    assert D._assistant_spans(_tok(PLAIN), conv) == [(9, 21), (30, 42)]  # after 'U: hi\nA: ' (9 characters) 'yo<|im_end|>' (12), then '\nU: q\nA: '
    assert msg(lambda: D._encode_chat(object(), conv, 'c')).startswith('c: the tokenizer has no chat template')  # not even the attribute

@pytest.mark.parametrize('kw', [{}, {'terse': True}])
def test_chat_spans_agree_with_generation_tags(kw):
    "Prefix rendering finds the tokens that {% generation %} marks, with the template's switches and with a tokenizer that adds a BOS."
    conv = [U('hi'), A('yo'), U('q'), A('ok')]
    want = D._encode_chat(_tok(SWITCH), conv, 's', **kw)
    assert _tok().decode(want[0]).startswith('[terse]\nU: hi' if kw else 'U: hi') and _runs(_tok(), *want) == ['yo<|im_end|>', ' ok<|im_end|>']
    assert D._encode_chat(_tok(PLAIN), conv, 's', **kw) == want
    assert D._encode_chat(_tok(PLAIN, post=('<|endoftext|> $A', [('<|endoftext|>', 0)])), conv, 's', **kw) == want  # the rendered text has no BOS to add

def test_switches_reach_messages_and_the_prompt_mask():
    conv = [U('hi'), A('yo'), U('q'), A('ok')]
    tok = _tok(SWITCH)
    row = D.tokenize(datasets.Dataset.from_list([{'messages': conv}]), tok, DataCfg(path='m', chat_template_kwargs={'terse': True}))[0]
    assert tok.decode(row['input_ids']) == '[terse]\nU: hi\nA: yo<|im_end|>\nU: q\nA: ok<|im_end|>\n'
    pc = datasets.Dataset.from_list([{'prompt': conv[:3], 'completion': conv[3:]}])  # the prompt's own assistant turn is context
    for kw in ({}, {'terse': True}):
        row = D.tokenize(pc, tok, DataCfg(path='m', chat_template_kwargs=kw))[0]
        assert tok.decode(row['input_ids']).startswith('[terse]\n' if kw else 'U: hi') and _label_runs(tok, row) == [' ok<|im_end|>']

def test_row_messages_name_field_sample_and_file():
    tok, ok = _tok(), {'messages': [U('hi'), A('yo')]}
    T = lambda rows, t=tok, **kw: D.tokenize(datasets.Dataset.from_list(rows), t, DataCfg(path='d.jsonl', **kw))
    shape, fix = "is not a list of {'role': ..., 'content': ...} messages", 'Fix: fix or remove that sample'
    assert msg(lambda: T([{'conv': json.dumps([U('hi'), A('yo')])}, {'conv': 'hello'}], messages_field='conv')) == f"d.jsonl: sample 1: field 'conv' {shape}: 'hello'. {fix}"
    assert msg(lambda: T([{'body': 'ok'}, {'body': None}], text_field='body')) == f"d.jsonl: sample 1: field 'body' is NoneType 'None', not a string. {fix}"
    qa = dict(prompt_field='question', completion_field='answer')
    assert msg(lambda: T([{'question': [{'content': 'x'}], 'answer': [A('y')]}], **qa)) == f"d.jsonl: sample 0: field 'question' {shape}: \"[{{'content': 'x'}}]\". {fix}"
    assert msg(lambda: T([{'question': [U('x')], 'answer': 'yes'}], **qa)) == f"d.jsonl: sample 0: field 'answer' {shape}: 'yes'. {fix}"
    assert msg(lambda: T([{'question': 'q', 'answer': 'a'}, {'question': 'q', 'answer': None}], **qa)) == f"d.jsonl: sample 1: field 'answer' is NoneType 'None', not a string. {fix}"
    assert msg(lambda: T([{'prompt': [U('x')], 'completion': [A('y'), A('z')]}])) == ("d.jsonl: sample 0: the roles are out of order (user -> assistant -> assistant): "
        "two assistant turns follow each other. Fix: fix that sample so turns go user, assistant, user, ... (a system message may come first), or remove it")
    bare = _tok(); bare.chat_template = None
    none = "d.jsonl: the tokenizer has no chat template, so chat messages cannot be rendered. Fix: use a chat model's tokenizer, set tok.chat_template, or give the samples as text"
    assert [msg(lambda: T(rows, t=bare)) for rows in ([ok], [{'prompt': [U('x')], 'completion': [A('y')]}])] == [none, none]
    strict = _tok("{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}{{ raise_exception('roles must be user or assistant') }}"
                  "{% endif %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}")
    assert msg(lambda: T([{'prompt': [{'role': 'system', 'content': 's'}, U('x')], 'completion': [A('y')]}], t=strict)) == \
        "d.jsonl: sample 0: the chat template rejected it: roles must be user or assistant. Fix: fix that sample so the model's chat template accepts it"  # no messages field: no roles

def test_tokenize_setting_messages():
    tok = _tok()
    rows = lambda *r: datasets.Dataset.from_list(list(r))
    assert msg(lambda: D.tokenize(rows({'text': 'x'}), tok, DataCfg(path='train.jsonl', format='prompt_completion'), source='ev.jsonl')) == (
        "ev.jsonl: no field 'prompt', which format='prompt_completion' reads as prompt_field; the fields are: text. "
        "Fix: set DataCfg.prompt_field to the field that holds it, or choose another format")
    assert msg(lambda: D.tokenize(rows({'messages': [U('x'), A('y')]}), tok, DataCfg(path='d', response_template='###')), ConfigError) == (
        "data.response_template='###': response_template applies to the text format, but the data is messages. Fix: leave it empty: this format already marks what is trained")
    assert msg(lambda: D.tokenize(rows({'prompt': 'x', 'completion': 'y'}), tok, DataCfg(path='d', too_long='split')), ConfigError) == (
        "data.too_long='split': only plain text can be cut into pieces: prompt_completion samples cut in two would leave a piece without the prompt it answers. "
        "Fix: use 'truncate' or 'drop', or raise data.max_length")
    class SlowTok: pass  # no is_fast at all, like a tokenizer from another library
    class PyTok: is_fast = False
    for t in (SlowTok(), PyTok()):
        assert msg(lambda: D.tokenize(rows({'text': 'x'}), t, DataCfg(path='d')), ConfigError) == (f"tokenizer={type(t).__name__!r}: ftnb needs token offsets, "
            "which only fast tokenizers give. Fix: load a fast tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True))")
    assert D.tokenize(rows({'text': 'x', 'id': 3}), tok, DataCfg(path='d')).column_names == ['input_ids', 'labels']  # the raw fields go

def test_length_edges_and_messages():
    tok = _tok()
    text = 'a b c d e f g h'
    assert len(tok(text)['input_ids']) + 1 == 9  # with its eos
    ds = datasets.Dataset.from_dict({'text': [text]})
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # exactly max_length: nothing to do, nothing to say
        assert len(D.tokenize(ds, tok, DataCfg(path='d', max_length=9, too_long='raise'))[0]['input_ids']) == 9
    assert msg(lambda: D.tokenize(ds, tok, DataCfg(path='d', max_length=8, too_long='raise'))) == \
        "d: 1 of 1 samples are longer than max_length=8 tokens (longest: 9). Fix: raise max_length to at least 9, or set too_long='drop' or 'truncate'"
    pc = datasets.Dataset.from_list([{'prompt': 'a b c d e f g h i j', 'completion': ' k'}, {'prompt': 'a b c d e f g h i j k l', 'completion': ' m'}])
    assert [len(x) for x in D.tokenize(pc, tok, DataCfg(path='d', max_length=64))['input_ids']] == [13, 15]
    assert msg(lambda: D.tokenize(pc, tok, DataCfg(path='d', max_length=8, too_long='drop'))) == \
        "d: all 2 samples are longer than max_length=8 tokens (longest: 15). Fix: raise max_length to at least 15, or set too_long='truncate'"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert msg(lambda: D.tokenize(pc, tok, DataCfg(path='d', max_length=8, too_long='truncate'))) == \
            "d: no sample has a trained token within max_length=8. Fix: raise max_length to at least 15"
    assert [str(x.message) for x in w if issubclass(x.category, D.DataWarning)] == [
        'd: 2 of 2 samples are longer than max_length=8 tokens (longest: 15): truncated them, and dropped 2 that had no trained token left']

def test_chat_template_is_tried_as_trained_and_as_prompted():
    "data.chat_template is rendered for training (no generation prompt) and for generation (a user turn + generation prompt), with the switches."
    loop = '{% for m in messages %}{{ m.content }}{% endfor %}'
    fix = "Fix: fix the template so that it renders [{'role': 'user', ...}, {'role': 'assistant', ...}] (and the switches in data.chat_template_kwargs)"
    use = lambda t, **kw: D.use_chat_template(_tok(), DataCfg(chat_template=t, chat_template_kwargs=kw))
    gen = loop + "{% if add_generation_prompt and messages[-1].role == 'user' %}{{ raise_exception('no prompt here') }}{% endif %}"
    assert msg(lambda: use(gen), ConfigError) == f"data.chat_template={gen[:77] + '...'!r}: it does not render: TemplateError: no prompt here. {fix}"
    train = loop + "{% if not add_generation_prompt %}{{ raise_exception('for generation only') }}{% endif %}"
    assert msg(lambda: use(train), ConfigError) == f"data.chat_template={train[:77] + '...'!r}: it does not render: TemplateError: for generation only. {fix}"
    switch = loop + '{% if think is defined %}{{ think + 1 }}{% endif %}'
    assert use(switch).chat_template == switch
    assert msg(lambda: use(switch, think='yes'), ConfigError).endswith(': it does not render: TypeError: can only concatenate str (not "int") to str. ' + fix)
    bad = "{{ messages[0]['content'] | nosuchfilter }}"
    for n, shown in ((79, bad + ' ' * 36), (80, bad + ' ' * 34 + '...')):  # shown whole below 80 characters, else its first 77 and '...'
        t = bad + ' ' * (n - len(bad))
        assert msg(lambda: use(t), ConfigError) == f"data.chat_template={shown!r}: it does not render: TemplateAssertionError: No filter named 'nosuchfilter'.. {fix}"

def test_show_sample_marks_added_special_tokens():
    from tokenizers import AddedToken
    tok = _tok()
    tok.add_tokens([AddedToken('<|tool|>', special=True)])  # special, but not in all_special_ids (like Qwen's <tool_call>)
    tool = tok.convert_tokens_to_ids('<|tool|>')
    assert tool not in tok.all_special_ids
    ids = [tool] + tok('hi', add_special_tokens=False)['input_ids'] + [tok.eos_token_id]
    v = D.show_sample({'input_ids': ids, 'labels': [-100] + ids[1:]}, tok)
    assert v.pieces == ['<|tool|>', 'h', 'i', '<|im_end|>'] and v.special == [True, False, False, True] and v.trained == [False, True, True, True]

def test_prepare_split_sizes_and_default_seed():
    from ftnb.config import RunConfig
    tok = _tok()
    cfg = DataCfg(path='toy:prompt_completion', max_samples=12, eval_fraction=0.1)
    train, ev = D.prepare(cfg, tok)
    assert (len(train), len(ev)) == (11, 1)  # round(1.2): one held out
    assert [len(x) for x in D.prepare(cfg.model_copy(update={'eval_fraction': 0.3}), tok)] == [8, 4]  # round(3.6)
    assert ev['input_ids'] == D.prepare(cfg, tok, seed=RunConfig().train.seed)[1]['input_ids']  # prepare alone splits as ftnb.train does by default

def test_prompt_completion_masks_the_generation_prompt():
    "Conversational prompt/completion trains the completion after the generation prompt, even where the template's {% generation %} covers the header."
    hdr = ("{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ 'A: ' + m.content + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
           "{% else %}{{ 'U: ' + m.content + '\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'A: ' }}{% endif %}")
    tok = _tok(hdr)
    row = lambda r: D.tokenize(datasets.Dataset.from_list([r]), tok, DataCfg(path='m'))[0]
    assert _label_runs(tok, row({'messages': [U('q'), A('ok')]})) == ['A: ok<|im_end|>']  # the template's own mask holds the header
    assert _label_runs(tok, row({'prompt': [U('q')], 'completion': [A('ok')]})) == [' ok<|im_end|>']  # 'A:' comes with the prompt at inference

def test_format_messages_name_the_setting():
    rows = datasets.Dataset.from_dict({'prompt': ['p'], 'body': ['b']})
    fields, fix = 'the fields are: prompt, body', 'to the field that holds it, or choose another format'
    for fmt, kw, col, name in (('text', {'text_field': 'txt'}, 'txt', 'text_field'), ('messages', {'messages_field': 'conv'}, 'conv', 'messages_field'),
                               ('prompt_completion', {'completion_field': 'answer'}, 'answer', 'completion_field')):  # the prompt is there: the completion is named
        assert msg(lambda: D.detect_format(rows, DataCfg(path='f.jsonl', format=fmt, **kw))) == \
            f"f.jsonl: no field {col!r}, which format={fmt!r} reads as {name}; {fields}. Fix: set DataCfg.{name} {fix}"
    assert msg(lambda: D.detect_format(datasets.Dataset.from_dict({}), DataCfg(path='f.jsonl'))) == (
        "f.jsonl: cannot tell the format: looked for 'messages' (messages); 'prompt'+'completion' (prompt_completion); 'text' (text); the fields are: (none). "
        "Fix: set text_field, prompt_field/completion_field or messages_field to your field names")
