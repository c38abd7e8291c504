#!/usr/bin/env python3
"""Replay perf_analyzer's call sequence with NVIDIA's tritonclient (HTTP and
gRPC) against the Switchyard proxy and one inference backend, and compare.

perf_analyzer cannot be installed here, so this does what it does with the
official Python clients: server and model metadata, model config (the parts
perf_analyzer's ModelParser reads), statistics (before and after, as its
InferenceProfiler does, including its std::stoll of the version), and
inference -- plus what other tritonclient users call: async_infer,
streaming, readiness of an unknown model, every advertised version pinned,
request/response compression and NaN/Inf inputs over gRPC.

Answers the proxy must give exactly as the backend does (tensor outputs,
bit for bit; tensor metadata; the model config's shape fields) are
compared. Prints one PASS/FAIL line per check and exits 1 if any failed.
See e2e/clients/README.md for how to build tritonclient from its sources.
"""

import argparse
import json
import queue
import sys
import traceback

import numpy as np

import grpc
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

RESULTS = []


def check(name, fn):
    """Run fn; PASS with its return value as detail, FAIL on any exception."""
    try:
        detail = fn()
        RESULTS.append((name, True))
        print("PASS %s%s" % (name, (": " + str(detail)) if detail else ""))
        return True
    except AssertionError as e:
        RESULTS.append((name, False))
        print("FAIL %s: %s" % (name, e))
    except InferenceServerException as e:
        RESULTS.append((name, False))
        print("FAIL %s: %s (status %s)" % (name, e.message(), e.status()))
    except Exception as e:  # a client crash is a failure, not an abort
        RESULTS.append((name, False))
        print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
        if ARGS.verbose:
            traceback.print_exc()
    return False


class Target:
    """One server under test: REST and gRPC address, the model to ask for,
    and the version whose answers are compared with the backend's."""

    def __init__(self, label, http_url, grpc_url, model, pin):
        self.label = label
        self.model = model
        self.pin = pin
        self.http = httpclient.InferenceServerClient(url=http_url, concurrency=4)
        self.grpc = grpcclient.InferenceServerClient(url=grpc_url)

    def client(self, proto):
        return self.http if proto == "http" else self.grpc


def is_true(v):
    assert v is True, "answered %r" % (v,)


def ints(xs):
    # gRPC's as_json renders int64 fields as strings (protobuf JSON).
    return [int(x) for x in xs]


def metadata(t, proto, version=""):
    if proto == "http":
        return t.http.get_model_metadata(t.model, version)
    return t.grpc.get_model_metadata(t.model, version, as_json=True)


def config(t, proto, version=""):
    if proto == "http":
        return t.http.get_model_config(t.model, version)
    return t.grpc.get_model_config(t.model, version, as_json=True)["config"]


def stats(t, proto, version=""):
    if proto == "http":
        return t.http.get_inference_statistics(t.model, version)
    return t.grpc.get_inference_statistics(t.model, version, as_json=True)


def tensor_spec(md):
    return [(x["name"], x["datatype"], ints(x["shape"])) for x in md["inputs"]], [
        (x["name"], x["datatype"], ints(x["shape"])) for x in md["outputs"]
    ]


def make_arrays(md, batch, special=False, exact=False):
    """FP32 inputs from the metadata's shapes (-1 -> batch), deterministic.
    special: NaN, +Inf, -Inf in the first row; exact: -0.0, subnormals,
    FLT_MAX and floats whose shortest decimal form is long (JSON's trouble)."""
    arrays = {}
    for name, dt, shape in tensor_spec(md)[0]:
        assert dt == "FP32", "input %s is %s; the replay sends FP32 only" % (name, dt)
        shape = [batch if d < 0 else d for d in shape]
        n = int(np.prod(shape))
        a = (np.arange(n, dtype=np.float32) % 17) / np.float32(16) - np.float32(0.3)
        if special:
            a[0], a[1], a[2] = np.nan, np.inf, -np.inf
        if exact:
            tiny = np.array([1, 3, 0x7FFFFF], dtype=np.uint32).view(np.float32)
            a[:3] = tiny
            a[3], a[4], a[5] = np.float32(-0.0), np.finfo(np.float32).max / np.float32(1e30), np.float32(1) / np.float32(3)
        arrays[name] = a.reshape(shape)
    return arrays


def inputs_for(mod, arrays, binary=True):
    ins = []
    for name, a in arrays.items():
        i = mod.InferInput(name, list(a.shape), "FP32")
        if mod is httpclient:
            i.set_data_from_numpy(a, binary_data=binary)
        else:
            i.set_data_from_numpy(a)
        ins.append(i)
    return ins


def outputs_for(mod, md, binary=True):
    outs = []
    for name, _, _ in tensor_spec(md)[1]:
        if mod is httpclient:
            outs.append(mod.InferRequestedOutput(name, binary_data=binary))
        else:
            outs.append(mod.InferRequestedOutput(name))
    return outs


def result_arrays(res, md):
    return {name: res.as_numpy(name) for name, _, _ in tensor_spec(md)[1]}


def same_bits(got, want, what):
    assert got.keys() == want.keys(), "%s: outputs %s, want %s" % (what, sorted(got), sorted(want))
    for k in want:
        g, w = got[k], want[k]
        assert g is not None, "%s: output %s missing" % (what, k)
        assert g.shape == w.shape and g.dtype == w.dtype, "%s: %s is %s %s, want %s %s" % (
            what, k, g.dtype, g.shape, w.dtype, w.shape)
        if g.tobytes() != w.tobytes():
            diff = int(np.sum(g.view(np.uint8) != w.view(np.uint8)))
            raise AssertionError("%s: %s differs from the backend's in %d bytes" % (what, k, diff))
    return "bit-identical to the backend's"


def infer(t, proto, arrays, md, version=None, binary=True, **kw):
    mod = httpclient if proto == "http" else grpcclient
    v = t.pin if version is None else version
    res = t.client(proto).infer(
        t.model, inputs_for(mod, arrays, binary), model_version=v,
        outputs=outputs_for(mod, md, binary), **kw)
    return result_arrays(res, md)


def raw_infer(addr, model, version, arrays, md, form):
    """One ModelInfer on the bare stubs, in a form tritonclient does not
    send: "kserve" is the KServe SDK's default (raw_input_contents plus
    parameters.binary_data_size on each input), "contents" the typed
    fp32_contents other clients use."""
    req = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, a in arrays.items():
        t = req.inputs.add(name=name, datatype="FP32", shape=list(a.shape))
        if form == "kserve":
            t.parameters["binary_data_size"].int64_param = a.nbytes
            req.raw_input_contents.append(a.tobytes())
        else:
            t.contents.fp32_contents.extend(a.reshape(-1).tolist())
    with grpc.insecure_channel(addr) as ch:
        resp = service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=30)
    out = {}
    for i, o in enumerate(resp.outputs):
        assert o.datatype == "FP32", "output %s is %s" % (o.name, o.datatype)
        if resp.raw_output_contents:
            a = np.frombuffer(resp.raw_output_contents[i], dtype=np.float32)
        else:
            a = np.array(o.contents.fp32_contents, dtype=np.float32)
        out[o.name] = a.reshape(list(o.shape))
    return out


def perf_analyzer_version(ver):
    # InferenceProfiler::DetermineStatsModelVersion: std::stoll(version),
    # which throws std::invalid_argument (perf_analyzer aborts) on "v1".
    s = ver.strip()
    try:
        int(s.split()[0] if s else s)
        return True
    except ValueError:
        return False


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--up-json", metavar="FILE",
                   help="switchyard up's state file (.state/up.json): the proxy, and the backend of --pin, "
                        "unless given below")
    p.add_argument("--proxy-http", help="proxy REST host:port")
    p.add_argument("--proxy-grpc", help="proxy gRPC host:port")
    p.add_argument("--backend-http", help="backend REST host:port")
    p.add_argument("--backend-grpc", help="backend gRPC host:port")
    p.add_argument("--model", default="recommender", help="the proxy's (virtual) model")
    p.add_argument("--backend-model", help="the backend's model (default: from --up-json, else recommender-v1)")
    p.add_argument("--pin", default="v1",
                   help="the proxy version served by --backend (its answers are compared)")
    p.add_argument("--batch", type=int, default=2, help="batch size for -1 dimensions")
    p.add_argument("--verbose", action="store_true")
    global ARGS
    ARGS = p.parse_args()
    if ARGS.up_json:
        with open(ARGS.up_json) as f:
            up = json.load(f)
        strip = lambda u: u.split("://", 1)[-1]
        ARGS.proxy_http = ARGS.proxy_http or strip(up["proxyHttp"])
        ARGS.proxy_grpc = ARGS.proxy_grpc or up["proxyGrpc"]
        bs = [b for b in up["backends"] if b["version"] == ARGS.pin]
        if bs:
            ARGS.backend_http = ARGS.backend_http or strip(bs[0]["http"])
            ARGS.backend_grpc = ARGS.backend_grpc or bs[0]["grpc"]
            ARGS.backend_model = ARGS.backend_model or bs[0]["model"]
    ARGS.backend_model = ARGS.backend_model or "recommender-v1"
    missing = [n for n in ("proxy_http", "proxy_grpc", "backend_http", "backend_grpc") if not getattr(ARGS, n)]
    if missing:
        p.error("give --up-json or --%s" % ", --".join(m.replace("_", "-") for m in missing))

    proxy = Target("proxy", ARGS.proxy_http, ARGS.proxy_grpc, ARGS.model, ARGS.pin)
    backend = Target("backend", ARGS.backend_http, ARGS.backend_grpc, ARGS.backend_model, "")
    targets = (proxy, backend)
    protos = ("http", "grpc")

    # --- server: perf_analyzer's first calls ---------------------------------
    for t in targets:
        for proto in protos:
            c = t.client(proto)
            tag = "%s %s" % (t.label, proto)
            check(tag + " is_server_live", lambda: is_true(c.is_server_live()))
            check(tag + " is_server_ready", lambda: is_true(c.is_server_ready()))

            def server_md():
                md = c.get_server_metadata() if proto == "http" else c.get_server_metadata(as_json=True)
                assert md.get("name") and md.get("version"), "name/version missing: %s" % md
                return "%s %s, extensions %s" % (md["name"], md["version"], md.get("extensions", []))
            check(tag + " get_server_metadata", server_md)

    # --- model metadata and config (ModelParser::InitTriton) ------------------
    mds, cfgs = {}, {}
    for t in targets:
        for proto in protos:
            tag = "%s %s" % (t.label, proto)

            def model_md():
                md = metadata(t, proto)
                assert md["name"] == t.model, "name %r, want %r" % (md["name"], t.model)
                assert md.get("versions"), "no versions listed"
                mds[(t.label, proto)] = md
                return "versions %s, inputs %s" % (md["versions"], tensor_spec(md)[0])
            check(tag + " get_model_metadata", model_md)

            def model_cfg():
                cfg = config(t, proto)
                md = mds[(t.label, proto)]
                assert cfg.get("name") == t.model, "config name %r, want %r" % (cfg.get("name"), t.model)
                mbs = int(cfg.get("max_batch_size", 0))
                for kind, spec in (("input", tensor_spec(md)[0]), ("output", tensor_spec(md)[1])):
                    got = {x["name"]: ints(x["dims"]) for x in cfg.get(kind, [])}
                    for name, _, shape in spec:
                        assert name in got, "config has no %s %r" % (kind, name)
                        want = shape[1:] if mbs > 0 else shape
                        assert got[name] == want, "config %s %s dims %s, metadata shape %s (max_batch_size %d)" % (
                            kind, name, got[name], shape, mbs)
                cfgs[(t.label, proto)] = cfg
                return "max_batch_size %d, dynamic_batching %s" % (mbs, "dynamic_batching" in cfg)
            check(tag + " get_model_config", model_cfg)

    def same_shapes():
        ref = mds.get(("backend", "grpc"))
        assert ref, "no backend metadata"
        for k, md in mds.items():
            assert tensor_spec(md) == tensor_spec(ref), "%s tensors %s, backend %s" % (k, tensor_spec(md), tensor_spec(ref))
        for k, cfg in cfgs.items():
            r = cfgs.get(("backend", "grpc"), cfg)
            assert int(cfg.get("max_batch_size", 0)) == int(r.get("max_batch_size", 0)), "%s max_batch_size differs" % (k,)
        return "tensor metadata and max_batch_size equal on all four"
    check("proxy vs backend metadata/config tensors", same_shapes)

    md = mds.get(("backend", "grpc")) or mds.get(("backend", "http"))
    if md is None:
        print("FAIL no backend metadata: cannot build inputs")
        return 1
    arrays = make_arrays(md, ARGS.batch)

    # --- statistics before (InferenceProfiler) -------------------------------
    before = {}
    for t in targets:
        for proto in protos:
            tag = "%s %s" % (t.label, proto)

            def st():
                s = stats(t, proto, t.pin)
                ms = [m for m in s.get("model_stats", []) if m.get("name") == t.model]
                assert ms, "no model_stats entry named %r: %s" % (t.model, s)
                before[(t.label, proto)] = ms[0]
                return "version %r, inference_count %s" % (ms[0].get("version"), ms[0].get("inference_count", 0))
            check(tag + " get_inference_statistics", st)

            def pa_version():
                m = before.get((t.label, proto))
                assert m is not None, "no statistics"
                v = m.get("version", "")
                assert perf_analyzer_version(v), (
                    "statistics version %r is not an integer: perf_analyzer's std::stoll throws "
                    "(DetermineStatsModelVersion) and it aborts" % v)
                if t.pin:
                    assert perf_analyzer_version(t.pin), "perf_analyzer -x %s: std::stoll(%r) throws" % (t.pin, t.pin)
                return "version %r" % v
            check(tag + " perf_analyzer stats version parses (std::stoll)", pa_version)

    # --- readiness --------------------------------------------------------
    for t in targets:
        for proto in protos:
            c = t.client(proto)
            tag = "%s %s" % (t.label, proto)

            def ready():
                assert c.is_model_ready(t.model) is True, "not ready"
            check(tag + " is_model_ready", ready)

            def unknown():
                r = c.is_model_ready("no-such-model")
                assert r is False, "answered %r" % r
                return "False, no exception"
            check(tag + " is_model_ready(unknown model)", unknown)

    # --- inference, compared with the backend's gRPC answer ----------------
    ref = {}

    def reference():
        ref.update(infer(backend, "grpc", arrays, md))
        return "outputs %s" % {k: v.shape for k, v in ref.items()}
    if not check("backend grpc infer (reference)", reference):
        return 1

    for t in targets:
        tag = t.label
        check(tag + " http infer (JSON)", lambda: same_bits(infer(t, "http", arrays, md, binary=False), ref, "JSON"))
        check(tag + " http infer (binary_data)", lambda: same_bits(infer(t, "http", arrays, md), ref, "binary"))
        check(tag + " grpc infer", lambda: same_bits(infer(t, "grpc", arrays, md), ref, "gRPC"))

        def http_async():
            h = t.http.async_infer(t.model, inputs_for(httpclient, arrays), model_version=t.pin,
                                   outputs=outputs_for(httpclient, md))
            return same_bits(result_arrays(h.get_result(timeout=30), md), ref, "async")
        check(tag + " http async_infer", http_async)

        def grpc_async():
            q = queue.Queue()
            t.grpc.async_infer(t.model, inputs_for(grpcclient, arrays), lambda result, error: q.put((result, error)),
                               model_version=t.pin, outputs=outputs_for(grpcclient, md))
            r, e = q.get(timeout=30)
            if e is not None:
                raise e
            return same_bits(result_arrays(r, md), ref, "async")
        check(tag + " grpc async_infer", grpc_async)

        def stream():
            q = queue.Queue()
            c = grpcclient.InferenceServerClient(url=ARGS.proxy_grpc if t is proxy else ARGS.backend_grpc)
            c.start_stream(callback=lambda result, error: q.put((result, error)))
            n = 8
            try:
                for i in range(n):
                    c.async_stream_infer(t.model, inputs_for(grpcclient, arrays), model_version=t.pin,
                                         outputs=outputs_for(grpcclient, md), request_id="req-%d" % i)
                ids = set()
                for _ in range(n):
                    r, e = q.get(timeout=30)
                    if e is not None:
                        raise e
                    ids.add(r.get_response().id)
                    same_bits(result_arrays(r, md), ref, "stream")
            finally:
                c.stop_stream()
                c.close()
            assert ids == {"req-%d" % i for i in range(n)}, "ids answered %s" % sorted(ids)
            return "%d answers, ids echoed, bit-identical" % n
        check(tag + " grpc start_stream/async_stream_infer", stream)

        for alg in ("gzip", "deflate"):
            for resp in ("gzip", "deflate"):
                check("%s http infer request %s, response %s" % (tag, alg, resp),
                      lambda: same_bits(infer(t, "http", arrays, md, request_compression_algorithm=alg,
                                              response_compression_algorithm=resp), ref, alg))
            check("%s grpc infer compression %s" % (tag, alg),
                  lambda: same_bits(infer(t, "grpc", arrays, md, compression_algorithm=alg), ref, alg))

        for form in ("kserve", "contents"):
            addr = ARGS.proxy_grpc if t is proxy else ARGS.backend_grpc
            check("%s grpc infer, %s form (bare stubs)" % (tag, "KServe SDK raw + binary_data_size" if form == "kserve" else "typed fp32_contents"),
                  lambda: same_bits(raw_infer(addr, t.model, t.pin, arrays, md, form), ref, form))

        def bad_shape():
            mod = grpcclient
            a = {k: v.reshape(-1)[: v.size - 1] for k, v in arrays.items()}
            try:
                t.grpc.infer(t.model, inputs_for(mod, a), model_version=t.pin)
            except InferenceServerException as e:
                assert e.status() == "StatusCode.INVALID_ARGUMENT", "status %s: %s" % (e.status(), e.message())
                return "%s %s" % (e.status(), e.message())
            raise AssertionError("a wrong-shaped input was accepted")
        check(tag + " grpc infer wrong shape -> INVALID_ARGUMENT", bad_shape)

        def bad_shape_http():
            a = {k: v.reshape(-1)[: v.size - 1] for k, v in arrays.items()}
            try:
                t.http.infer(t.model, inputs_for(httpclient, a), model_version=t.pin)
            except InferenceServerException as e:
                assert str(e.status()) == "400", "status %s: %s" % (e.status(), e.message())
                return "%s %s" % (e.status(), e.message())
            raise AssertionError("a wrong-shaped input was accepted")
        check(tag + " http infer wrong shape -> 400", bad_shape_http)

    # Lossless without NaN: -0.0, subnormals, odd decimals, through the proxy.
    exact = make_arrays(md, ARGS.batch, exact=True)
    eref = {}

    def ereference():
        eref.update(infer(backend, "grpc", exact, md))
        return "backend answered"
    if check("backend grpc infer -0.0/subnormal/1/3 (reference)", ereference):
        for proto, binary in (("grpc", True), ("http", True), ("http", False)):
            name = "proxy %s infer -0.0/subnormal/1/3%s" % (proto, "" if proto == "grpc" else (" (binary_data)" if binary else " (JSON)"))
            check(name, lambda: same_bits(infer(proxy, proto, exact, md, binary=binary), eref, "exact"))

    # --- every advertised version pinned -------------------------------------
    for t in targets:
        for proto in protos:
            md_t = mds.get((t.label, proto))
            if md_t is None:
                continue
            c = t.client(proto)
            for v in md_t["versions"]:
                tag = "%s %s version %s" % (t.label, proto, v)

                def pinned():
                    assert c.is_model_ready(t.model, v) is True, "is_model_ready false"
                    m = metadata(t, proto, v)
                    assert m["name"] == t.model, "metadata name %r" % m["name"]
                    cf = config(t, proto, v)
                    assert cf.get("name") == t.model, "config name %r" % cf.get("name")
                    s = stats(t, proto, v)
                    vs = [x.get("version") for x in s.get("model_stats", [])]
                    assert v in vs, "statistics for version %s answered versions %s" % (v, vs)
                    out = infer(t, proto, arrays, md, version=v)
                    if t is backend or v == ARGS.pin:
                        same_bits(out, ref, "pinned")
                        return "ready, metadata, config, stats, infer bit-identical"
                    return "ready, metadata, config, stats, infer answered"
                check(tag + " (ready/metadata/config/stats/infer)", pinned)

    # --- statistics after: perf_analyzer reads the queue count's growth ------
    for t in targets:
        for proto in protos:
            tag = "%s %s" % (t.label, proto)

            def grew():
                b = before.get((t.label, proto))
                assert b is not None, "no statistics before"
                s = stats(t, proto, t.pin)
                a = [m for m in s.get("model_stats", []) if m.get("name") == t.model][0]
                qb = int(b.get("inference_stats", {}).get("queue", {}).get("count", 0))
                qa = int(a.get("inference_stats", {}).get("queue", {}).get("count", 0))
                ib, ia = int(b.get("inference_count", 0)), int(a.get("inference_count", 0))
                assert qa > qb and ia > ib, "queue count %d -> %d, inference_count %d -> %d" % (qb, qa, ib, ia)
                return "queue count %d -> %d, inference_count %d -> %d" % (qb, qa, ib, ia)
            check(tag + " statistics grew over the replay", grew)

    # --- NaN / Inf inputs (last: on a route with a fallback policy the proxy
    # judges a NaN answer the version's failure, which counts toward its
    # breaker) -------------------------------------------------------------
    special = make_arrays(md, ARGS.batch, special=True)
    sref = {}

    def sreference():
        sref.update(infer(backend, "grpc", special, md))
        return "backend answered"
    if check("backend grpc infer NaN/Inf (reference)", sreference):
        check("proxy grpc infer NaN/Inf", lambda: same_bits(infer(proxy, "grpc", special, md), sref, "NaN"))
        check("proxy grpc stream NaN/Inf", lambda: stream_one(proxy, special, md, sref))
        check("proxy http infer NaN/Inf (binary_data)", lambda: same_bits(infer(proxy, "http", special, md), sref, "NaN"))

    failed = [n for n, ok in RESULTS if not ok]
    print("\n%d checks, %d passed, %d failed" % (len(RESULTS), len(RESULTS) - len(failed), len(failed)))
    for t in targets:
        t.http.close()
        t.grpc.close()
    return 1 if failed else 0


def stream_one(t, arrays, md, want):
    q = queue.Queue()
    c = grpcclient.InferenceServerClient(url=ARGS.proxy_grpc if t.label == "proxy" else ARGS.backend_grpc)
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    try:
        c.async_stream_infer(t.model, inputs_for(grpcclient, arrays), model_version=t.pin,
                             outputs=outputs_for(grpcclient, md), request_id="nan")
        r, e = q.get(timeout=30)
    finally:
        c.stop_stream()
        c.close()
    if e is not None:
        raise e
    return same_bits(result_arrays(r, md), want, "stream NaN")


if __name__ == "__main__":
    sys.exit(main())
