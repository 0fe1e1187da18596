package elbv2

import "strings"

// attrTable is one kind of resource's attributes (load balancer, target
// group, listener): what Describe*Attributes lists and Modify*Attributes
// accepts, and the words its errors use.
type attrTable struct {
	// kind names the resource in messages, in lower case ("target group").
	kind string
	// listed are always listed, in AWS's order, with their defaults;
	// optional are accepted but listed only once set.
	listed, optional []lbAttr
	// most caps a Modify request's list; 0 leaves it uncapped.
	most int
	// mustPrefix comes before a value's description in the error for a bad
	// value (listeners' header values may always be empty).
	mustPrefix string
	// refuse, if set, gives a more precise error for a key the table does
	// not know, or nil to fall back to "not recognized".
	refuse func(key string) error
}

// find is the key's attribute; optional is true for one listed only once set.
func (t *attrTable) find(key string) (a lbAttr, known, optional bool) {
	for _, a := range t.listed {
		if a.key == key {
			return a, true, false
		}
	}
	for _, a := range t.optional {
		if a.key == key {
			return a, true, true
		}
	}
	return lbAttr{}, false, false
}

// value is the attribute's value in stored, or its default.
func (t *attrTable) value(stored map[string]string, key string) string {
	if v, ok := stored[key]; ok {
		return v
	}
	a, _, _ := t.find(key)
	return a.def
}

// out is the Describe/Modify response's Attributes list.
func (t *attrTable) out(stored map[string]string) any {
	out := struct {
		Attributes []attrXML `xml:"Attributes>member"`
	}{Attributes: []attrXML{}}
	for _, a := range t.listed {
		out.Attributes = append(out.Attributes, attrXML{a.key, t.value(stored, a.key)})
	}
	for _, a := range t.optional {
		if v, ok := stored[a.key]; ok {
			out.Attributes = append(out.Attributes, attrXML{a.key, v})
		}
	}
	return out
}

// in reads and checks a Modify*Attributes request's Attributes list.
func (t *attrTable) in(r *request) (map[string]string, error) {
	members := r.structs("Attributes")
	if len(members) == 0 {
		return nil, validation("1 validation error detected: Value null at 'attributes' failed to satisfy constraint: Member must not be null")
	}
	if t.most > 0 && len(members) > t.most {
		return nil, validation("1 validation error detected: Value at 'attributes' failed to satisfy constraint: Member must have length less than or equal to %d", t.most)
	}
	kind := strings.ToUpper(t.kind[:1]) + t.kind[1:]
	set := map[string]string{}
	for _, p := range members {
		k, v := r.param(p+"Key"), r.param(p+"Value")
		if k == "" {
			return nil, validation("A %s attribute key must be specified", t.kind)
		}
		a, known, _ := t.find(k)
		if !known {
			if t.refuse != nil {
				if err := t.refuse(k); err != nil {
					return nil, err
				}
			}
			return nil, validation("%s attribute key '%s' is not recognized", kind, k)
		}
		if !a.check(v) {
			return nil, validation("%s attribute value '%s' is not valid for key '%s': it must be %s%s", kind, v, k, t.mustPrefix, a.want)
		}
		set[k] = v
	}
	return set, nil
}
