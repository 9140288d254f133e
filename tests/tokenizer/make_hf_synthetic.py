#!/usr/bin/env python3
# Regenerates data/hf_synthetic.json: small tokenizer.json documents exercising the components
# the real tokenizers do not use (Metaspace, Split behaviours, Replace with a regex, added-token
# lstrip/rstrip/single_word/normalized, byte fallback, Strip, no decoder), with the ids and
# decoded texts HF tokenizers (PyPI `tokenizers`) gives. Run: python3 make_hf_synthetic.py
import json, os
from tokenizers import Tokenizer
chars = list("abcdefghijklmnopqrstuvwxyz") + ["▁", ".", ",", "!", "-"]
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256): vocab["<0x%02X>" % b] = len(vocab)
for c in chars: vocab[c] = len(vocab)
merges = [["▁","t"],["h","e"],["▁t","he"],["▁","a"],["i","n"],["▁a","n"],["▁an","d"],["l","l"],["e","ll"],["h","ell"],["hell","o"],["▁","hello"]]
for a,b in merges:
    if a+b not in vocab: vocab[a+b]=len(vocab)
def mk(pre, norm, dec, added, post=None):
    return {"version":"1.0","truncation":None,"padding":None,"added_tokens":added,"normalizer":norm,
            "pre_tokenizer":pre,"post_processor":post,"decoder":dec,
            "model":{"type":"BPE","dropout":None,"unk_token":"<unk>","continuing_subword_prefix":None,"end_of_word_suffix":None,
                     "fuse_unk":True,"byte_fallback":True,"ignore_merges":False,"vocab":vocab,"merges":[a+" "+b for a,b in merges]}}
def at(id, content, special=True, lstrip=False, rstrip=False, normalized=False, single_word=False):
    return {"id":id,"content":content,"single_word":single_word,"lstrip":lstrip,"rstrip":rstrip,"normalized":normalized,"special":special}
nid = len(vocab)
added = [at(0,"<unk>"),at(1,"<s>"),at(2,"</s>"),
         at(nid,"[L]",lstrip=True), at(nid+1,"[R]",rstrip=True), at(nid+2,"word",special=False,single_word=True),
         at(nid+3,"[N]",special=False,normalized=True)]
cases = {
 "metaspace": mk({"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":True},
                 {"type":"Replace","pattern":{"Regex":"[0-9]+"},"content":"-"},
                 {"type":"Sequence","decoders":[{"type":"ByteFallback"},{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":True}]},
                 added,
                 {"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"</s>","type_id":0}}],
                  "pair":[],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]},"</s>":{"id":"</s>","ids":[2],"tokens":["</s>"]}}}),
 "split": mk({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"String":"-"},"behavior":"MergedWithPrevious","invert":False},
                                                {"type":"Split","pattern":{"Regex":"\\s+"},"behavior":"Removed","invert":False}]},
             None, {"type":"Sequence","decoders":[{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":"-","start":1,"stop":0}]}, added[:3]),
 "split_next": mk({"type":"Split","pattern":{"String":"-"},"behavior":"MergedWithNext","invert":False}, None, None, added[:3]),
 "split_contig": mk({"type":"Split","pattern":{"String":"-"},"behavior":"Contiguous","invert":False}, None, None, added[:3]),
 "split_invert": mk({"type":"Split","pattern":{"Regex":"[a-z]+"},"behavior":"Isolated","invert":True}, None, None, added[:3]),
}
# GPT-2 style: byte-level alphabet vocab, ByteLevel pre-tokenizer with prefix space and regex.
def bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}
alphabet = bytes_to_unicode()
bl_vocab = {"<s>": 0, "</s>": 1}
for b in range(256): bl_vocab[alphabet[b]] = len(bl_vocab)
G = alphabet[32]
bl_merges = [[G, "t"], ["h", "e"], [G + "t", "he"], [G, "a"], ["n", "d"], [G + "a", "nd"], ["l", "l"], ["e", "ll"]]
for a, b in bl_merges:
    bl_vocab.setdefault(a + b, len(bl_vocab))
cases["byte_level_gpt2"] = {"version": "1.0", "truncation": None, "padding": None,
    "added_tokens": [at(0, "<s>"), at(1, "</s>")], "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
              "vocab": bl_vocab, "merges": bl_merges}}
texts = ["hello the and", " hello  the", "word words sword word", "a [L]b", "a  [L]  b", "a [R]  b", "x[N]y [N] z",
         "hello é and ☃!", "the 123 and 4", "a--b-c", "-a- b--", "abc-def--", "", "  ", "<s>the</s>", "a b\u3000c",
         "hi\tthere", "a...b", "x\u3000[L]\u00a0[R]\u2003y"]
def dec(t,ids,skip):
    try: return t.decode(ids, skip_special_tokens=skip)
    except BaseException: return None
out = {}
for name, spec in cases.items():
    js = json.dumps(spec, ensure_ascii=False)
    t = Tokenizer.from_str(js)
    res = []
    for s in texts:
        ids = t.encode(s, add_special_tokens=False).ids
        ids2 = t.encode(s, add_special_tokens=True).ids
        res.append({"text": s, "ids": ids, "ids_special": ids2, "decoded": dec(t,ids,False), "decoded_skip": dec(t,ids2,True)})
    out[name] = {"json": spec, "cases": res}
import tokenizers
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "data", "hf_synthetic.json"), "w", encoding="utf-8") as f:
    json.dump({"generator": "tokenizers " + tokenizers.__version__, "tokenizers": out}, f, ensure_ascii=False)
    f.write("\n")
