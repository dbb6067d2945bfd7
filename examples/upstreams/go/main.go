// A sessiongate upstream in Go.
//
// It verifies the session token with golang-jwt (HS256 with the secret it
// shares with sessiongate, or EdDSA with the keys sessiongate publishes as a
// JWKS), reads the session from the claims, and changes it by answering with
// X-Session-Update (a JSON Merge Patch) and X-Session-Action headers.
//
//	UPSTREAM_JWT_SECRET=... go run . 3000                                          # HS256
//	SESSIONGATE_JWKS_URL=http://127.0.0.1:9090/.well-known/jwks.json go run . 3000 # EdDSA
package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"sync"

	"github.com/golang-jwt/jwt/v4"
)

type claims struct {
	Sid     string                 `json:"sid,omitempty"`
	Session map[string]interface{} `json:"session"`
	jwt.RegisteredClaims
}

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

var (
	audience = env("SESSIONGATE_AUDIENCE", "app")
	issuer   = env("SESSIONGATE_ISSUER", "sessiongate")
	secret   = []byte(os.Getenv("UPSTREAM_JWT_SECRET"))
	jwksURL  = os.Getenv("SESSIONGATE_JWKS_URL")

	keysMu sync.Mutex
	keys   = map[string]ed25519.PublicKey{}
)

// publicKey returns the Ed25519 key with this kid, fetching the JWKS again
// when the kid is new (sessiongate rotated its key).
func publicKey(kid string) (ed25519.PublicKey, error) {
	keysMu.Lock()
	defer keysMu.Unlock()
	if k, ok := keys[kid]; ok {
		return k, nil
	}
	resp, err := http.Get(jwksURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct{ Kty, Crv, Kid, X string } `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return nil, err
	}
	for _, k := range set.Keys {
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if k.Kty == "OKP" && k.Crv == "Ed25519" && err == nil && len(x) == ed25519.PublicKeySize {
			keys[k.Kid] = ed25519.PublicKey(x)
		}
	}
	if k, ok := keys[kid]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("no key %q in the JWKS", kid)
}

func verify(token string) (*claims, string, error) {
	method := "HS256"
	if jwksURL != "" {
		method = "EdDSA"
	}
	c := &claims{}
	parsed, err := jwt.ParseWithClaims(token, c, func(t *jwt.Token) (interface{}, error) {
		if t.Method.Alg() != method {
			return nil, fmt.Errorf("unexpected algorithm %s", t.Method.Alg())
		}
		if method == "HS256" {
			return secret, nil
		}
		kid, _ := t.Header["kid"].(string)
		return publicKey(kid)
	})
	if err != nil {
		return nil, "", err
	}
	if !c.VerifyAudience(audience, true) || !c.VerifyIssuer(issuer, true) {
		return nil, "", errors.New("wrong audience or issuer")
	}
	return c, parsed.Method.Alg(), nil
}

func handle(w http.ResponseWriter, r *http.Request) {
	c, alg, err := verify(r.Header.Get("X-Session-Token"))
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(map[string]string{"error": "invalid session token: " + err.Error()})
		return
	}
	update := func(v interface{}) {
		b, _ := json.Marshal(v)
		w.Header().Set("X-Session-Update", string(b))
	}
	switch r.URL.Path {
	case "/login":
		user := r.URL.Query().Get("user")
		if user == "" {
			user = "guest"
		}
		// A new session id on login, against session fixation.
		update(map[string]string{"user_id": user})
		w.Header().Set("X-Session-Action", "cycle")
	case "/count":
		count, _ := c.Session["count"].(float64)
		update(map[string]float64{"count": count + 1})
	case "/logout":
		w.Header().Set("X-Session-Action", "flush")
	}
	var sid interface{}
	if c.Sid != "" {
		sid = c.Sid
	}
	json.NewEncoder(w).Encode(map[string]interface{}{"verified": true, "alg": alg, "sid": sid, "session": c.Session})
}

func main() {
	port := "3000"
	if len(os.Args) > 1 {
		port = os.Args[1]
	}
	http.HandleFunc("/", handle)
	log.Printf("listening on 127.0.0.1:%s", port)
	log.Fatal(http.ListenAndServe("127.0.0.1:"+port, nil))
}
