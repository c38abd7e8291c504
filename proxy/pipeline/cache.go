package pipeline

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
// upstream call; the first caller (the leader) makes it on its own
// goroutine (fallback.Coalescer Join / Finish, in the pipeline's serve),
// the others wait for its answer.

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

// reqKey is an exchange's cache key for the variant it was routed to (ok
// false: the request could not be hashed, so the cache is bypassed and
// the upstream says what is wrong with it), and its request id when the
// key came from the raw-body memo (idOK), so a hit needs no decoding.
type reqKey struct {
	key      fallback.Key
	ok, idOK bool
	id       string
}

// hit answers the exchange from the prediction cache.
func (rp *routePolicies) hit(x *Exchange, v *Variant, res *Result, k reqKey) bool {
	if e, ok := rp.cache.Get(k.key); ok && rp.fill(x, v, res, e, k) == nil {
		res.Cache = "hit"
		return true
	}
	return false
}

// follow answers a coalesced follower with its leader's outcome.
func (rp *routePolicies) follow(ctx context.Context, fl fallback.Flight[*sharedAnswer], x *Exchange, v *Variant, res *Result, k reqKey) error {
	sh, err := fl.Wait(ctx)
	if err != nil {
		return oip.Errorf(oip.Canceled, "model %q: request cancelled while waiting for an identical request's answer", rp.route.Name)
	}
	return rp.fillShared(x, v, res, sh, k)
}

// shareAnswer is the leader's outcome for its followers: the cache entry
// built from it, or its bytes as they are.
func shareAnswer(res *Result, err error, e fallback.Entry, eok bool) *sharedAnswer {
	sh := &sharedAnswer{err: err, entry: e, hasEntry: eok, variant: res.Variant, fallback: res.Fallback, reason: res.FallbackReason, trigger: res.Trigger}
	if err == nil && !eok {
		sh.status, sh.ct, sh.body = res.Status, res.ContentType, bytes.Clone(res.Body)
	}
	return sh
}

// store adds a good answer of v itself to the cache and returns the entry
// built (also for a fallback's answer, which is shared with coalesced
// followers but not cached).
func (rp *routePolicies) store(x *Exchange, v *Variant, res *Result, err error, k reqKey) (fallback.Entry, bool) {
	if err != nil || !res.OK() {
		return fallback.Entry{}, false
	}
	e, ok := rp.entry(x, res)
	if ok && res.Fallback == "" && (res.Variant == nil || res.Variant == v) {
		rp.cache.Add(k.key, e)
	}
	return e, ok
}

// keyOf is the exchange's cache key for v. With the cache on, a REST body
// seen before (byte for byte) gets its key from the raw-body memo without
// decoding.
func (rp *routePolicies) keyOf(x *Exchange, v *Variant) reqKey {
	var h uint64
	memo := rp.memo != nil && x.PBReq == nil
	if memo {
		h = rp.memo.hash(v.Index, x.HeaderLen, x.Body)
		if key, id, ok := rp.memo.get(h, v.Index, x.HeaderLen, x.Body); ok {
			return reqKey{key: key, ok: true, id: id, idOK: true}
		}
	}
	req, err := x.Request()
	if err != nil {
		return reqKey{}
	}
	format := "json"
	if x.PBReq != nil {
		format = "grpc"
	}
	key, err := fallback.NewKey(rp.route.Name, rp.keyVersion[v.Index], format, req, nil)
	if err != nil {
		return reqKey{}
	}
	if memo {
		rp.memo.put(h, v.Index, x.HeaderLen, x.Body, key, req.ID)
	}
	return reqKey{key: key, ok: true}
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
func (rp *routePolicies) entry(x *Exchange, res *Result) (fallback.Entry, bool) {
	if x.PBReq != nil {
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
func (rp *routePolicies) fill(x *Exchange, v *Variant, res *Result, e fallback.Entry, k reqKey) error {
	if e.Value != nil {
		m, ok := e.Value.(*pb.ModelInferResponse)
		if !ok || x.PBReq == nil {
			return fmt.Errorf("cache entry of the wrong form")
		}
		body := res.Body[:0]
		*res = Result{Body: body, Variant: v, PB: &pb.ModelInferResponse{ModelName: m.ModelName, ModelVersion: m.ModelVersion,
			Id: x.PBReq.GetId(), Parameters: m.Parameters, Outputs: m.Outputs, RawOutputContents: m.RawOutputContents}}
		return nil
	}
	if x.PBReq != nil {
		return fmt.Errorf("cache entry of the wrong form")
	}
	body, hl := res.Body[:0], e.HeaderLen
	id := k.id
	if !k.idOK {
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
func (rp *routePolicies) fillShared(x *Exchange, v *Variant, res *Result, sh *sharedAnswer, k reqKey) error {
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
		if err := rp.fill(x, av, res, sh.entry, k); err != nil {
			return oip.Errorf(oip.Internal, "model %q: %v", rp.route.Name, err)
		}
	default:
		body := append(res.Body[:0], sh.body...)
		*res = Result{Body: body, Variant: av, Status: sh.status, ContentType: sh.ct}
	}
	res.Fallback, res.FallbackReason, res.Trigger, res.Variant = sh.fallback, sh.reason, sh.trigger, av
	return nil
}
