package elbv2

import (
	"fmt"
	"testing"

	"github.com/gantry-dev/gantry/internal/awsapi"
)

// attrsForm is a Modify*Attributes request listing the key/value pairs.
func attrsForm(kv ...string) *request {
	r := testRequest()
	for i := 0; i+1 < len(kv); i += 2 {
		n := i/2 + 1
		r.form[fmt.Sprintf("Attributes.member.%d.Key", n)] = []string{kv[i]}
		r.form[fmt.Sprintf("Attributes.member.%d.Value", n)] = []string{kv[i+1]}
	}
	return r
}

// attrsListed is the Attributes list a Describe*Attributes answers with.
func attrsListed(tab *attrTable, stored map[string]string) []attrXML {
	return tab.out(stored).(struct {
		Attributes []attrXML `xml:"Attributes>member"`
	}).Attributes
}

// fuzzAttrsIn is what every Modify*Attributes fuzz target checks: the
// parser answers a ValidationError (nil set), or a set holding the known
// key with a value its check accepts.
func fuzzAttrsIn(t *testing.T, tab *attrTable, k, v string) map[string]string {
	set, err := tab.in(attrsForm(k, v))
	if err != nil {
		if e := awsapi.AsError(err); e.Code != "ValidationError" {
			t.Fatalf("%q=%q: %v", k, v, err)
		}
		return nil
	}
	if a, known, _ := tab.find(k); !known || !a.check(set[k]) {
		t.Fatalf("%q=%q accepted", k, v)
	}
	return set
}
