"""The unmodified `openai` client from PyPI against `elastic serve`: completions and chat
completions, non-streaming and streaming, usage with its `elastic` figures; and greedy outputs of
concurrent requests equal to `elastic generate` run alone with the same options."""
import concurrent.futures

import openai
import pytest

from conftest import MODEL, generate

PROMPTS = ["Once upon a time", "The little dog", "Tom and Lily went to the park", "One day, a bird",
           "The sun was shining and", "Sam had a red ball"]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_lists_the_served_model(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["tinystories-656k"]


def test_completion_equals_generate(client):
    r = client.completions.create(model="tinystories-656k", prompt="Once upon a time", max_tokens=24,
                                  temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].text == generate("Once upon a time", 24)
    assert r.choices[0].finish_reason in ("length", "stop")
    assert r.usage.prompt_tokens == 6  # BOS + 5 tokens, as generate encodes it
    assert 1 <= r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    e = r.usage.model_extra["elastic"]
    assert e["omega_msr"] == 0.0 and e["omega_esr"] == 0.0  # a backbone without router: dense
    assert e["kv_bytes"] == e["kv_bytes_dense"] > 0


def usage_tokens(chunks):
    return chunks[-1].usage.completion_tokens


def test_streaming_completion_equals_non_streaming(client):
    kw = dict(model="tinystories-656k", prompt="The little dog", max_tokens=150, temperature=0)
    whole = client.completions.create(**kw).choices[0].text
    chunks = list(client.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole
    # Really streamed: more than one text event. Each write sends all the text decoded since the
    # last one, so the count depends on scheduling (on a loaded 2-core machine the handler thread
    # slept through all of a 30-token reply once); 150 tokens outlast any scheduling gap.
    assert usage_tokens(chunks) > 30
    assert len([c for c in chunks if c.choices and c.choices[0].text]) > 1
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens > 0
    assert set(usage.model_extra["elastic"]) >= {"omega_msr", "omega_esr", "kv_bytes", "kv_bytes_dense"}


def test_stream_text_chunks_are_the_json_dump_of_their_fields(server):
    """The server writes a text chunk's event from a precomputed prefix and suffix around the
    text's JSON string: on the wire it must be exactly the compact, key-sorted dump of the chunk
    (what the JSON tree gave), text with quotes, newlines and non-ASCII included."""
    import http.client
    import json
    for path, body in [("/v1/completions", {"prompt": 'He said "hi"\nand', "max_tokens": 60, "temperature": 1.5,
                                            "seed": 7, "stream": True}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "A cat"}],
                                                 "max_tokens": 40, "temperature": 1.5, "seed": 3, "stream": True})]:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        raw = conn.getresponse().read().decode()
        conn.close()
        events = [e for e in raw.split("\n\n") if e]
        assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
        texts, joined = 0, ""
        for e in events[:-1]:
            ev = json.loads(e[6:])
            choice = ev["choices"][0] if ev["choices"] else {}
            piece = choice.get("text") or choice.get("delta", {}).get("content")
            if piece and choice["finish_reason"] is None:
                texts, joined = texts + 1, joined + piece
                assert e[6:] == json.dumps(ev, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        # A stream sends what text is ready at each write: under load several tokens share a
        # chunk, so the count of chunks varies; the text they carried does not (seeded).
        assert texts >= 1 and len(joined) > 20


def test_chat_completion_and_stream(client):
    msgs = [{"role": "system", "content": "Tell a story."}, {"role": "user", "content": "A cat"}]
    r = client.chat.completions.create(model="tinystories-656k", messages=msgs, max_tokens=16, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str)
    assert "elastic" in r.usage.model_extra
    chunks = list(client.chat.completions.create(model="tinystories-656k", messages=msgs, max_tokens=16,
                                                 temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_stop_string_and_seeded_sampling(client):
    full = client.completions.create(model="tinystories-656k", prompt="Once upon a time", max_tokens=24,
                                     temperature=0).choices[0].text
    cut = client.completions.create(model="tinystories-656k", prompt="Once upon a time", max_tokens=24,
                                    temperature=0, stop=["Lily"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == full[:full.index("Lily")]
    a = client.completions.create(model="tinystories-656k", prompt="The sun", max_tokens=20, temperature=1.0,
                                  top_p=0.9, seed=1234).choices[0].text
    b = client.completions.create(model="tinystories-656k", prompt="The sun", max_tokens=20, temperature=1.0,
                                  top_p=0.9, seed=1234).choices[0].text
    assert a == b


def test_elastic_extension_routes_the_request(client):
    prompt = "Tom and Lily went to the park and played with a big red ball. " * 6  # > 16 + 32 tokens
    r = client.completions.create(model="tinystories-656k", prompt=prompt, max_tokens=40, temperature=0,
                                  extra_body={"elastic": {"static": "all-sa"}})
    e = r.usage.model_extra["elastic"]
    assert e["omega_msr"] == 1.0
    assert e["omega_esr"] > 0.0  # the prompt's later queries skip the keys between sinks and window
    assert e["kv_bytes"] < e["kv_bytes_dense"]  # SSA rings (16 + 32 rows) past 48 positions


@pytest.mark.parametrize("n_clients", [6])
def test_concurrent_greedy_equals_sequential_generate(client, n_clients):
    """N concurrent requests (half of them all-SA through the extension) give exactly the texts
    of N sequential `elastic generate` runs with the same options."""
    jobs = [(p, 40, i % 2 == 1) for i, p in enumerate(PROMPTS[:n_clients])]

    def ask(job):
        prompt, n, sparse = job
        extra = {"elastic": {"static": "all-sa"}} if sparse else None
        return client.completions.create(model="tinystories-656k", prompt=prompt, max_tokens=n, temperature=0,
                                         extra_body=extra).choices[0].text

    with concurrent.futures.ThreadPoolExecutor(n_clients) as ex:
        got = list(ex.map(ask, jobs))
    want = [generate(p, n, ["--static", "all-sa"] if sparse else []) for p, n, sparse in jobs]
    assert got == want
