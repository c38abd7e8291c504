package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// The prediction cache (spec.cache, opt-in per model). The key is the
// model, the version the request was routed to (its name and backend model,
// version and protocol, so a redeployed version never serves what its
// predecessor cached), the client's transport ("json" for REST, "grpc")
// and the SHA-256 of the request's canonical form (fallback.AppendCanonical:
// input order and JSON formatting do not matter, request and output
// parameters do, the request id does not).
//
// Entries hold the answer in the form the client gets it: REST bytes, or a
// gRPC message, without the request id; a hit answers with the new
// request's id (REST: spliced in front of the stored JSON). Hits carry
// x-switchyard-cache: hit. Cache-Control: no-cache (or no-store) skips the
// lookup and coalescing; the fresh answer is still stored. Only the chosen
// version's own good answers are stored: never a fallback's, never a
// shadow's.
//
// Coalescing (spec.cache.coalesce, default on with the cache): identical
// requests (same key) in flight at the same moment share the first one's
// upstream call; the first caller makes it on its own goroutine
// (fallback.Coalescer Join / Finish), the others wait for its answer.

// cacheInvoker answers from the cache or calls next (coalesced).
type cacheInvoker struct {
	rf   *routeFeatures
	next Invoker
}

// sharedAnswer is a coalesced call's outcome, handed to the followers.
type sharedAnswer struct {
	err      error
	entry    fallback.Entry
	hasEntry bool
	status   int
	ct       string
	body     []byte
	variant  *Variant
	fallback string
	reason   string
	trigger  fallback.Trigger
}

func (ci *cacheInvoker) Invoke(ctx context.Context, x *Exchange, v *Variant, res *Result) error {
	rf := ci.rf
	key, ok := rf.key(x, v)
	if !ok {
		return ci.next.Invoke(ctx, x, v, res) // undecodable: the upstream says why
	}
	if x.ext.noCache || rf.coal == nil {
		if !x.ext.noCache {
			if e, hit := rf.cache.Get(key); hit && rf.fill(x, v, res, e) == nil {
				res.Cache = "hit"
				return nil
			}
		}
		err := ci.next.Invoke(ctx, x, v, res)
		ci.store(x, v, res, err, key)
		return err
	}
	if e, hit := rf.cache.Get(key); hit && rf.fill(x, v, res, e) == nil {
		res.Cache = "hit"
		return nil
	}
	fl, leader := rf.coal.Join(key)
	if !leader {
		sh, err := fl.Wait(ctx)
		if err != nil {
			return oip.Errorf(oip.Canceled, "model %q: request cancelled while waiting for an identical request's answer", rf.route.Name)
		}
		return rf.fillShared(x, v, res, sh)
	}
	var sh *sharedAnswer
	defer func() {
		if sh == nil {
			sh = &sharedAnswer{err: oip.Errorf(oip.Internal, "model %q: the shared call failed", rf.route.Name)}
		}
		rf.coal.Finish(key, fl, sh, nil)
	}()
	// The leader's call answers its followers too: a leader whose client
	// goes away does not cut it short (it stays within the deadline).
	err := ci.next.Invoke(context.WithoutCancel(ctx), x, v, res)
	e, eok := ci.store(x, v, res, err, key)
	sh = &sharedAnswer{err: err, entry: e, hasEntry: eok, variant: res.Variant, fallback: res.Fallback, reason: res.FallbackReason, trigger: res.Trigger}
	if err == nil && !eok {
		sh.status, sh.ct, sh.body = res.Status, res.ContentType, bytes.Clone(res.Body)
	}
	return err
}

// store adds a good answer of v itself to the cache and returns the entry
// built (also for a fallback's answer, which is shared with coalesced
// followers but not cached).
func (ci *cacheInvoker) store(x *Exchange, v *Variant, res *Result, err error, key fallback.Key) (fallback.Entry, bool) {
	if err != nil || !res.OK() {
		return fallback.Entry{}, false
	}
	e, ok := ci.rf.entry(x, res)
	if ok && res.Fallback == "" && (res.Variant == nil || res.Variant == v) {
		ci.rf.cache.Add(key, e)
	}
	return e, ok
}

// key is the exchange's cache key for v, computed once per exchange. With
// the cache on, a REST body seen before (byte for byte) gets its key from
// the raw-body memo without decoding.
func (rf *routeFeatures) key(x *Exchange, v *Variant) (fallback.Key, bool) {
	if x.ext.keyOK {
		return x.ext.key, true
	}
	if x.ext.keyErr {
		return fallback.Key{}, false
	}
	var h uint64
	memo := rf.memo != nil && x.pbReq == nil
	if memo {
		h = rf.memo.hash(v.Index, x.headerLen, x.body)
		if k, id, ok := rf.memo.get(h, v.Index, x.headerLen, x.body); ok {
			x.ext.key, x.ext.keyOK, x.ext.reqID, x.ext.idOK = k, true, id, true
			return k, true
		}
	}
	req, err := x.Request()
	if err == nil {
		format := "json"
		if x.pbReq != nil {
			format = "grpc"
		}
		x.ext.key, err = fallback.NewKey(rf.route.Name, rf.keyVersion[v.Index], format, req, nil)
	}
	if err != nil {
		x.ext.keyErr = true
		return fallback.Key{}, false
	}
	x.ext.keyOK = true
	if memo {
		rf.memo.put(h, v.Index, x.headerLen, x.body, x.ext.key, req.ID)
	}
	return x.ext.key, true
}

// rawMemo maps REST bodies seen recently (exact bytes, per variant) to
// their cache key and request id, so repeated requests skip JSON decoding
// and canonical hashing. Bounded: when full it starts over.
type rawMemo struct {
	seed maphash.Seed
	max  int
	mu   sync.Mutex
	m    map[uint64]rawMemoEntry
}

type rawMemoEntry struct {
	variant, headerLen int
	body               []byte
	key                fallback.Key
	id                 string
}

// rawMemoMaxBody is the largest body the memo keeps (bigger ones are
// decoded every time; their decoding dwarfs nothing).
const rawMemoMaxBody = 16 << 10

func newRawMemo(max int) *rawMemo {
	return &rawMemo{seed: maphash.MakeSeed(), max: max, m: make(map[uint64]rawMemoEntry)}
}

func (m *rawMemo) hash(variant, headerLen int, body []byte) uint64 {
	return maphash.Bytes(m.seed, body) ^ uint64(variant)<<48 ^ uint64(headerLen)<<32
}

func (m *rawMemo) get(h uint64, variant, headerLen int, body []byte) (fallback.Key, string, bool) {
	m.mu.Lock()
	e, ok := m.m[h]
	m.mu.Unlock()
	if !ok || e.variant != variant || e.headerLen != headerLen || !bytes.Equal(e.body, body) {
		return fallback.Key{}, "", false
	}
	return e.key, e.id, true
}

func (m *rawMemo) put(h uint64, variant, headerLen int, body []byte, k fallback.Key, id string) {
	if len(body) > rawMemoMaxBody {
		return
	}
	e := rawMemoEntry{variant: variant, headerLen: headerLen, body: bytes.Clone(body), key: k, id: id}
	m.mu.Lock()
	if len(m.m) >= m.max {
		clear(m.m)
	}
	m.m[h] = e
	m.mu.Unlock()
}

// entry builds the cache entry of a good answer, in the client's form and
// without the request id.
func (rf *routeFeatures) entry(x *Exchange, res *Result) (fallback.Entry, bool) {
	if x.pbReq != nil {
		m := res.PB
		if m == nil {
			resp, err := res.Response()
			if err != nil {
				return fallback.Entry{}, false
			}
			m = oip.InferResponseToProto(resp)
		}
		shell := &pb.ModelInferResponse{ModelName: m.ModelName, ModelVersion: m.ModelVersion, Parameters: m.Parameters,
			Outputs: m.Outputs, RawOutputContents: m.RawOutputContents}
		return fallback.Entry{Value: shell, ValueSize: proto.Size(shell)}, true
	}
	req, err := x.Request()
	if err != nil {
		return fallback.Entry{}, false
	}
	if res.PB == nil && !(res.parsed != nil && len(res.Body) == 0) && req.ID == "" {
		// REST bytes answering a request without an id: kept as they are.
		ct := res.ContentType
		if ct == "" {
			ct = "application/json"
		}
		return fallback.Entry{Body: bytes.Clone(res.Body), ContentType: ct, HeaderLen: res.HeaderLen}, true
	}
	resp, err := res.Response()
	if err != nil {
		return fallback.Entry{}, false
	}
	r2 := *resp
	r2.ID = ""
	b, hl, err := oip.AppendInferResponse(nil, &r2, req)
	if err != nil {
		return fallback.Entry{}, false
	}
	e := fallback.Entry{Body: b, ContentType: "application/json"}
	if hl < len(b) {
		e.ContentType, e.HeaderLen = "application/octet-stream", hl
	}
	return e, true
}

// fill answers the exchange from an entry, with the request's own id.
func (rf *routeFeatures) fill(x *Exchange, v *Variant, res *Result, e fallback.Entry) error {
	if e.Value != nil {
		m, ok := e.Value.(*pb.ModelInferResponse)
		if !ok || x.pbReq == nil {
			return fmt.Errorf("cache entry of the wrong form")
		}
		body := res.Body[:0]
		*res = Result{Body: body, Variant: v, PB: &pb.ModelInferResponse{ModelName: m.ModelName, ModelVersion: m.ModelVersion,
			Id: x.pbReq.GetId(), Parameters: m.Parameters, Outputs: m.Outputs, RawOutputContents: m.RawOutputContents}}
		return nil
	}
	if x.pbReq != nil {
		return fmt.Errorf("cache entry of the wrong form")
	}
	body, hl := res.Body[:0], e.HeaderLen
	id := x.ext.reqID
	if !x.ext.idOK {
		id = requestID(x)
	}
	if id != "" && len(e.Body) > 1 && e.Body[0] == '{' {
		q, _ := json.Marshal(id)
		body = append(append(append(body, `{"id":`...), q...), ',')
		added := len(body) - 1
		body = append(body, e.Body[1:]...)
		if hl > 0 {
			hl += added
		}
	} else {
		body = append(body, e.Body...)
	}
	*res = Result{Body: body, Variant: v, Status: 200, ContentType: e.ContentType, HeaderLen: hl}
	return nil
}

// fillShared answers a coalesced follower with the leader's outcome.
func (rf *routeFeatures) fillShared(x *Exchange, v *Variant, res *Result, sh *sharedAnswer) error {
	av := sh.variant
	if av == nil && sh.fallback == "" {
		av = v
	}
	res.Trigger = sh.trigger
	switch {
	case sh.err != nil:
		res.Variant = av
		return sh.err
	case sh.hasEntry:
		if err := rf.fill(x, av, res, sh.entry); err != nil {
			return oip.Errorf(oip.Internal, "model %q: %v", rf.route.Name, err)
		}
	default:
		body := append(res.Body[:0], sh.body...)
		*res = Result{Body: body, Variant: av, Status: sh.status, ContentType: sh.ct}
	}
	res.Fallback, res.FallbackReason, res.Trigger, res.Variant = sh.fallback, sh.reason, sh.trigger, av
	return nil
}
