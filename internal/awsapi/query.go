package awsapi

import (
	"encoding/xml"
	"net/http"
)

// QueryService serves a Query-protocol service (form-encoded POST, XML out).
type QueryService interface {
	ServeQuery(w http.ResponseWriter, r *http.Request, form map[string][]string)
	// WriteError writes e in the service's own error XML.
	WriteError(w http.ResponseWriter, e *Error)
}

// WriteXML writes v as an XML document with the declaration clients expect.
func WriteXML(w http.ResponseWriter, status int, v any) {
	b, err := xml.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(status)
	w.Write([]byte(xml.Header))
	w.Write(b)
}
