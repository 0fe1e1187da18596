package cloudwatch

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/cloudwatch/cwtypes"
)

// SigningName is CloudWatch's SigV4 service name: Query requests (older
// SDKs, form-encoded with Action=...) are routed by it.
const SigningName = "monitoring"

const xmlNS = "http://monitoring.amazonaws.com/doc/2010-08-01/"

type queryOp func(ctx context.Context, form map[string][]string) (any, error)

// qop decodes a Query form into the operation's generated input shape:
// Name.member.N lists, Parent.Child structures, ISO 8601 timestamps.
func qop[In any, Out any](fn func(context.Context, *In) (*Out, error)) queryOp {
	return func(ctx context.Context, form map[string][]string) (any, error) {
		in := new(In)
		if err := decodeForm(form, "", reflect.ValueOf(in).Elem()); err != nil {
			return nil, err
		}
		return fn(ctx, in)
	}
}

// Query returns the service's Query-protocol face.
func (s *Service) Query() awsapi.QueryService {
	ops := map[string]queryOp{
		"GetMetricStatistics": qop(s.getMetricStatistics),
		"GetMetricData":       qop(s.getMetricData),
		"ListMetrics":         qop(s.listMetrics),
		"PutMetricData":       qop(s.putMetricData),
	}
	maps.Copy(ops, s.alarmQueryOps())
	return &queryService{ops: ops}
}

type queryService struct{ ops map[string]queryOp }

func (q *queryService) ServeQuery(w http.ResponseWriter, r *http.Request, form map[string][]string) {
	action := first(form, "Action")
	op, ok := q.ops[action]
	if !ok {
		if action == "" {
			q.WriteError(w, awsapi.Errorf("MissingAction", "The request must contain the parameter Action."))
		} else {
			q.WriteError(w, awsapi.Errorf("InvalidAction", "The action %s is not valid for this web service.", action))
		}
		return
	}
	out, err := awsapi.Guard(func() (any, error) { return op(r.Context(), form) })
	if err != nil {
		q.WriteError(w, awsapi.AsError(err))
		return
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `%s<%sResponse xmlns="%s">`, xml.Header, action, xmlNS)
	if v := reflect.ValueOf(out); v.Kind() == reflect.Pointer && !v.IsNil() && v.Elem().NumField() > 0 {
		fmt.Fprintf(&b, "<%sResult>", action)
		encodeFields(&b, v.Elem())
		fmt.Fprintf(&b, "</%sResult>", action)
	}
	fmt.Fprintf(&b, "<ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></%sResponse>", w.Header().Get("X-Amzn-RequestId"), action)
	w.Header().Set("Content-Type", "text/xml")
	w.Write(b.Bytes())
}

func (q *queryService) WriteError(w http.ResponseWriter, e *awsapi.Error) {
	code, msg, status := e.Code, e.Message, e.Status
	switch code {
	case awsapi.CodeMissingAuth:
		code = "MissingAuthenticationToken"
	case awsapi.CodeUnknownKey:
		code, status = "InvalidClientTokenId", http.StatusForbidden
	case awsapi.CodeIncomplete:
		code = "IncompleteSignature"
	case awsapi.CodeBadSignature:
		code = "SignatureDoesNotMatch"
	case "ServerException":
		code = "InternalServiceError"
	}
	if status == 0 {
		status = http.StatusBadRequest
	}
	typ := "Sender"
	if status >= 500 {
		typ = "Receiver"
	}
	type xmlError struct {
		Type    string
		Code    string
		Message string
	}
	awsapi.WriteXML(w, status, struct {
		XMLName   xml.Name `xml:"ErrorResponse"`
		NS        string   `xml:"xmlns,attr"`
		Error     xmlError
		RequestId string
	}{NS: xmlNS, Error: xmlError{typ, code, msg}, RequestId: w.Header().Get("X-Amzn-RequestId")})
}

func first(form map[string][]string, k string) string {
	if v := form[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

var timeType = reflect.TypeOf(cwtypes.Time{})

func fieldName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "" {
		return f.Name
	}
	return name
}

// present reports whether the form has key or anything under it.
func present(form map[string][]string, key string) bool {
	if _, ok := form[key]; ok {
		return true
	}
	for k := range form {
		if strings.HasPrefix(k, key+".") {
			return true
		}
	}
	return false
}

func decodeForm(form map[string][]string, key string, v reflect.Value) error {
	bad := func(err error) error {
		return invalid("The value %q for parameter %s is invalid: %v.", first(form, key), key, err)
	}
	switch {
	case v.Type() == timeType:
		b, _ := json.Marshal(first(form, key))
		if err := v.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(b); err != nil {
			return bad(err)
		}
		return nil
	case v.Kind() == reflect.Pointer:
		if !present(form, key) {
			return nil
		}
		p := reflect.New(v.Type().Elem())
		if err := decodeForm(form, key, p.Elem()); err != nil {
			return err
		}
		v.Set(p)
		return nil
	case v.Kind() == reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			name := fieldName(v.Type().Field(i))
			if key != "" {
				name = key + "." + name
			}
			if err := decodeForm(form, name, v.Field(i)); err != nil {
				return err
			}
		}
		return nil
	case v.Kind() == reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 { // blob
			return nil
		}
		for n := 1; n <= 1000 && present(form, fmt.Sprintf("%s.member.%d", key, n)); n++ {
			e := reflect.New(v.Type().Elem()).Elem()
			if err := decodeForm(form, fmt.Sprintf("%s.member.%d", key, n), e); err != nil {
				return err
			}
			v.Set(reflect.Append(v, e))
		}
		return nil
	case v.Kind() == reflect.Map:
		return nil // tags, not used by the operations served
	}
	s := first(form, key)
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return bad(err)
		}
		v.SetInt(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return bad(err)
		}
		v.SetFloat(f)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return bad(err)
		}
		v.SetBool(b)
	}
	return nil
}

// encodeFields writes a structure's set fields as Query XML elements,
// lists as <Name><member>...</member></Name>.
func encodeFields(b *bytes.Buffer, v reflect.Value) {
	for i := 0; i < v.NumField(); i++ {
		encodeValue(b, fieldName(v.Type().Field(i)), v.Field(i))
	}
}

func encodeValue(b *bytes.Buffer, name string, v reflect.Value) {
	switch {
	case v.Type() == timeType:
		fmt.Fprintf(b, "<%s>%s</%s>", name, v.Interface().(cwtypes.Time).UTC().Format("2006-01-02T15:04:05.000Z"), name)
		return
	case v.Kind() == reflect.Pointer:
		if !v.IsNil() {
			encodeValue(b, name, v.Elem())
		}
		return
	case v.Kind() == reflect.Struct:
		fmt.Fprintf(b, "<%s>", name)
		encodeFields(b, v)
		fmt.Fprintf(b, "</%s>", name)
		return
	case v.Kind() == reflect.Slice:
		if v.IsNil() {
			return
		}
		fmt.Fprintf(b, "<%s>", name)
		for i := 0; i < v.Len(); i++ {
			encodeValue(b, "member", v.Index(i))
		}
		fmt.Fprintf(b, "</%s>", name)
		return
	case v.Kind() == reflect.Map:
		return
	}
	var s string
	switch v.Kind() {
	case reflect.String:
		s = v.String()
	case reflect.Int32, reflect.Int64:
		s = strconv.FormatInt(v.Int(), 10)
	case reflect.Float64:
		s = strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case reflect.Bool:
		s = strconv.FormatBool(v.Bool())
	}
	fmt.Fprintf(b, "<%s>", name)
	xml.EscapeText(b, []byte(s))
	fmt.Fprintf(b, "</%s>", name)
}
