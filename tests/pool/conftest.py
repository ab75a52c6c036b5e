import pytest


@pytest.fixture(scope="session")
def k1_run(tmp_path_factory):
    """A real tiny K-1 run directory with a checkpoint (trained for a few steps)."""
    from k1.testing import tiny_run

    return tiny_run(tmp_path_factory.mktemp("k1run"), steps=60)


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    """A tiny Llama and its byte tokenizer saved as a Hugging Face folder."""
    from k1.pool.testing import byte_hf_tokenizer, tiny_llama

    d = tmp_path_factory.mktemp("hf") / "tiny-llama"
    tiny_llama().save_pretrained(d)
    byte_hf_tokenizer().save_pretrained(d)
    return d


@pytest.fixture
def failing_server():
    """A real HTTP server on 127.0.0.1 that answers every request with 500; → its base URL."""
    import http.server

    from k1.pool.testing import serve_http

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"error": {"message": "boom", "type": "server_error", "code": 500}}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    with serve_http(Handler) as base:
        yield f"{base}/v1"


@pytest.fixture
def silent_server():
    """A real socket on 127.0.0.1 that accepts connections and never answers (every request times out)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    s.close()


@pytest.fixture(scope="session")
def trained_teacher():
    """A tiny Llama fitted for a few steps to the synthetic prose: a confident teacher to distil from."""
    import torch

    from k1.pool.testing import synthetic_text, tiny_hf_member, train_tiny_llama

    torch.set_num_threads(1)
    m = tiny_hf_member("teacher", seed=1, hidden=64, roles=["teacher"])
    train_tiny_llama(m.model, synthetic_text(), steps=80, seq=32)
    return m


@pytest.fixture(scope="session")
def prose_prompts():
    import random

    from k1.pool.testing import synthetic_text

    words = synthetic_text(seed=1).split()
    return [" ".join(words[i:i + 3]) + " " for i in random.Random(1).sample(range(len(words) - 5), 16)]


@pytest.fixture
def hostile_server():
    """A real HTTP server on 127.0.0.1 that speaks OpenAI's streaming format but misbehaves, by path:
    `/negative/v1` reports negative usage, `/flood/v1` streams 5 MB of text, `/trickle/v1` sends one
    small chunk every 0.2 s for ever, `/bigreply/v1` 3 MiB to any max_tokens, `/hugeusage/v1` reports
    2^40 − 1 tokens, `/overlong/v1` 5,000 completion tokens. → a function mode → base URL."""
    import http.server
    import json
    import time

    from k1.pool.testing import serve_http

    def event(obj) -> bytes:
        return f"data: {json.dumps(obj)}\n\n".encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            mode = self.path.split("/")[1]
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                if mode == "negative":
                    self.wfile.write(event({"choices": [{"index": 0, "text": "hi", "finish_reason": "stop"}],
                                            "usage": {"prompt_tokens": -100000, "completion_tokens": -5}}))
                elif mode == "flood":
                    piece = event({"choices": [{"index": 0, "text": "x" * 65536}]})
                    for _ in range(80):
                        self.wfile.write(piece)
                elif mode == "bigreply":  # 3 MiB of answer to any max_tokens, with a plausible usage
                    piece = event({"choices": [{"index": 0, "text": "y" * 65536}]})
                    for _ in range(48):
                        self.wfile.write(piece)
                    self.wfile.write(event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}}))
                elif mode == "hugeusage":  # a short answer billed as 2^40 - 1 tokens
                    self.wfile.write(event({"choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}],
                                            "usage": {"prompt_tokens": (1 << 40) - 1,
                                                      "completion_tokens": (1 << 40) - 1}}))
                elif mode == "overlong":  # more completion tokens than max_tokens allows
                    self.wfile.write(event({"choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}],
                                            "usage": {"prompt_tokens": 3, "completion_tokens": 5000}}))
                elif mode == "trickle":
                    while True:
                        self.wfile.write(event({"choices": [{"index": 0, "text": "."}]}))
                        self.wfile.flush()
                        time.sleep(0.2)
                self.wfile.write(b"data: [DONE]\n\n")
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *a):
            pass

    with serve_http(Handler) as base:
        yield lambda mode: f"{base}/{mode}/v1"


@pytest.fixture(scope="session")
def pg_server():
    """A real Postgres on a private loopback port with a temporary data folder, for the session (skipped, with
    the reason, where none can start)."""
    from k1.common.pgserver import LocalPostgres, unavailable

    why = unavailable()
    if why:
        pytest.skip(f"Postgres store tests: {why}")
    try:
        pg = LocalPostgres()
    except RuntimeError as e:  # e.g. a temporary folder the unprivileged server user cannot reach
        pytest.skip(f"Postgres store tests: {e}")
    try:
        pg.start()
    except RuntimeError as e:
        pg.close()
        pytest.skip(f"Postgres store tests: {e}")
    yield pg
    pg.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    """Where a fresh pool store lives, on each backend: a SQLite file path, or a new Postgres database's URL."""
    if request.param == "sqlite":
        return str(tmp_path / "p.sqlite")
    pg = request.getfixturevalue("pg_server")
    return pg.create_database(f"t{abs(hash(request.node.nodeid)) % 10**12}")
