package logs

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gantry-dev/gantry/internal/awsapi"
	lt "github.com/gantry-dev/gantry/internal/logs/logstypes"
)

// TargetPrefix is CloudWatch Logs' X-Amz-Target prefix.
const TargetPrefix = "Logs_20140328"

// Service serves the CloudWatch Logs API on a Store.
type Service struct {
	Store *Store
	Log   *slog.Logger
}

func (s *Service) JSON() *awsapi.JSONService {
	return &awsapi.JSONService{TargetPrefix: TargetPrefix, Log: s.Log, Ops: map[string]awsapi.Handler{
		"CreateLogGroup":        awsapi.Op(s.createLogGroup),
		"DeleteLogGroup":        awsapi.Op(s.deleteLogGroup),
		"DescribeLogGroups":     awsapi.Op(s.describeLogGroups),
		"CreateLogStream":       awsapi.Op(s.createLogStream),
		"DeleteLogStream":       awsapi.Op(s.deleteLogStream),
		"DescribeLogStreams":    awsapi.Op(s.describeLogStreams),
		"PutLogEvents":          awsapi.Op(s.putLogEvents),
		"GetLogEvents":          awsapi.Op(s.getLogEvents),
		"FilterLogEvents":       awsapi.Op(s.filterLogEvents),
		"PutRetentionPolicy":    awsapi.Op(s.putRetentionPolicy),
		"DeleteRetentionPolicy": awsapi.Op(s.deleteRetentionPolicy),
		"TagLogGroup":           awsapi.Op(s.tagLogGroup),
		"UntagLogGroup":         awsapi.Op(s.untagLogGroup),
		"ListTagsLogGroup":      awsapi.Op(s.listTagsLogGroup),
		"TagResource":           awsapi.Op(s.tagResource),
		"UntagResource":         awsapi.Op(s.untagResource),
		"ListTagsForResource":   awsapi.Op(s.listTagsForResource),
	}}
}

type empty struct{}

func errNotFound(msg string) *awsapi.Error {
	return awsapi.Errorf("ResourceNotFoundException", "%s", msg)
}
func errExists(msg string) *awsapi.Error {
	return awsapi.Errorf("ResourceAlreadyExistsException", "%s", msg)
}

func invalid(format string, args ...any) *awsapi.Error {
	return awsapi.Errorf("InvalidParameterException", format, args...)
}

// constraint words a failed check the way AWS's request validation does.
func constraint(field string, value any, rule string) *awsapi.Error {
	if value == nil {
		return invalid("1 validation error detected: Value null at '%s' failed to satisfy constraint: %s", field, rule)
	}
	return invalid("1 validation error detected: Value '%v' at '%s' failed to satisfy constraint: %s", value, field, rule)
}

func scopeOf(ctx context.Context) Scope {
	id := awsapi.IdentityFrom(ctx)
	return Scope{Account: id.Account, Region: id.Region}
}

var (
	groupNameRe = regexp.MustCompile(`^[\.\-_/#A-Za-z0-9]+$`)
	tagKeyRe    = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$`)
	tagValueRe  = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
)

func checkGroupName(field string, p *string) (string, error) {
	if p == nil {
		return "", constraint(field, nil, "Member must not be null")
	}
	n := *p
	switch {
	case len(n) < 1:
		return "", constraint(field, n, "Member must have length greater than or equal to 1")
	case len(n) > 512:
		return "", constraint(field, n, "Member must have length less than or equal to 512")
	case !groupNameRe.MatchString(n):
		return "", constraint(field, n, `Member must satisfy regular expression pattern: [\.\-_/#A-Za-z0-9]+`)
	}
	return n, nil
}

func checkStreamName(p *string) (string, error) {
	if p == nil {
		return "", constraint("logStreamName", nil, "Member must not be null")
	}
	n := *p
	switch {
	case len(n) < 1:
		return "", constraint("logStreamName", n, "Member must have length greater than or equal to 1")
	case len(n) > 512:
		return "", constraint("logStreamName", n, "Member must have length less than or equal to 512")
	case strings.ContainsAny(n, ":*"):
		return "", constraint("logStreamName", n, "Member must satisfy regular expression pattern: [^:*]*")
	}
	return n, nil
}

// groupOf reads logGroupName or logGroupIdentifier (a name or an ARN), as
// the read operations accept either but not both.
func groupOf(name, ident *string) (string, error) {
	switch {
	case name != nil && ident != nil:
		return "", invalid("LogGroup name and LogGroup ARN are mutually exclusive parameters.")
	case ident != nil:
		id := strings.TrimSuffix(*ident, ":*")
		if strings.HasPrefix(id, "arn:") {
			i := strings.Index(id, ":log-group:")
			if i < 0 {
				return "", constraint("logGroupIdentifier", *ident, "Member must be a log group name or ARN")
			}
			id = id[i+len(":log-group:"):]
		}
		return checkGroupName("logGroupIdentifier", &id)
	}
	return checkGroupName("logGroupName", name)
}

func checkLimit(p *int32, def, max int) (int, error) {
	if p == nil {
		return def, nil
	}
	if *p < 1 {
		return 0, constraint("limit", *p, "Member must have value greater than or equal to 1")
	}
	if int(*p) > max {
		return 0, constraint("limit", *p, fmt.Sprintf("Member must have value less than or equal to %d", max))
	}
	return int(*p), nil
}

func checkTags(tags map[string]string) error {
	if len(tags) > 50 {
		return constraint("tags", "map", "Member must have length less than or equal to 50")
	}
	for k, v := range tags {
		if len(k) < 1 || len(k) > 128 || !tagKeyRe.MatchString(k) || strings.HasPrefix(k, "aws:") {
			return invalid("Invalid tag key %q: keys are 1 to 128 letters, digits, spaces and _.:/=+-@, not starting with aws:.", k)
		}
		if len(v) > 256 || !tagValueRe.MatchString(v) {
			return invalid("Invalid tag value %q for key %q: values are up to 256 letters, digits, spaces and _.:/=+-@.", v, k)
		}
	}
	return nil
}

func groupARN(sc Scope, name string) string {
	return fmt.Sprintf("arn:aws:logs:%s:%s:log-group:%s", sc.Region, sc.Account, name)
}

var retentionDays = []int32{1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}

func (s *Service) createLogGroup(ctx context.Context, in *lt.CreateLogGroupRequest) (*empty, error) {
	name, err := checkGroupName("logGroupName", in.LogGroupName)
	if err != nil {
		return nil, err
	}
	class := "STANDARD"
	if in.LogGroupClass != nil {
		class = *in.LogGroupClass
		if class != "STANDARD" && class != "INFREQUENT_ACCESS" && class != "DELIVERY" {
			return nil, constraint("logGroupClass", class, "Member must satisfy enum value set: [STANDARD, INFREQUENT_ACCESS, DELIVERY]")
		}
	}
	if err := checkTags(in.Tags); err != nil {
		return nil, err
	}
	return &empty{}, s.Store.createGroup(ctx, scopeOf(ctx), name, deref(in.KmsKeyId), class, in.Tags)
}

func (s *Service) deleteLogGroup(ctx context.Context, in *lt.DeleteLogGroupRequest) (*empty, error) {
	name, err := checkGroupName("logGroupName", in.LogGroupName)
	if err != nil {
		return nil, err
	}
	return &empty{}, s.Store.deleteGroup(ctx, scopeOf(ctx), name)
}

func (s *Service) describeLogGroups(ctx context.Context, in *lt.DescribeLogGroupsRequest) (*lt.DescribeLogGroupsResponse, error) {
	limit, err := checkLimit(in.Limit, 50, 50)
	if err != nil {
		return nil, err
	}
	if in.LogGroupNamePrefix != nil && in.LogGroupNamePattern != nil {
		return nil, invalid("LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.")
	}
	sc := scopeOf(ctx)
	after := ""
	if in.NextToken != nil {
		after, err = decodeNameToken(*in.NextToken)
		if err != nil {
			return nil, err
		}
	}
	gs, err := s.Store.groups(ctx, sc, deref(in.LogGroupNamePrefix), deref(in.LogGroupNamePattern), after, limit)
	if err != nil {
		return nil, err
	}
	out := &lt.DescribeLogGroupsResponse{LogGroups: []*lt.LogGroup{}}
	if len(in.LogGroupIdentifiers) > 0 {
		want := map[string]bool{}
		for _, id := range in.LogGroupIdentifiers {
			n, err := groupOf(nil, &id)
			if err != nil {
				return nil, err
			}
			want[n] = true
		}
		kept := gs[:0]
		for _, g := range gs {
			if want[g.Name] {
				kept = append(kept, g)
			}
		}
		gs = kept
	}
	if len(gs) > limit {
		gs = gs[:limit]
		out.NextToken = ptr(encodeNameToken(gs[len(gs)-1].Name))
	}
	for _, g := range gs {
		if in.LogGroupClass != nil && g.Class != *in.LogGroupClass {
			continue
		}
		arn := groupARN(sc, g.Name)
		out.LogGroups = append(out.LogGroups, &lt.LogGroup{
			LogGroupName:      ptr(g.Name),
			Arn:               ptr(arn + ":*"),
			LogGroupArn:       ptr(arn),
			CreationTime:      ptr(g.Created),
			RetentionInDays:   g.Retention,
			MetricFilterCount: ptr(int32(0)),
			StoredBytes:       ptr(g.Bytes),
			LogGroupClass:     ptr(g.Class),
			KmsKeyId:          nonEmpty(g.KMS),
		})
	}
	return out, nil
}

func (s *Service) createLogStream(ctx context.Context, in *lt.CreateLogStreamRequest) (*empty, error) {
	group, err := checkGroupName("logGroupName", in.LogGroupName)
	if err != nil {
		return nil, err
	}
	name, err := checkStreamName(in.LogStreamName)
	if err != nil {
		return nil, err
	}
	return &empty{}, s.Store.createStream(ctx, scopeOf(ctx), group, name)
}

func (s *Service) deleteLogStream(ctx context.Context, in *lt.DeleteLogStreamRequest) (*empty, error) {
	group, err := checkGroupName("logGroupName", in.LogGroupName)
	if err != nil {
		return nil, err
	}
	name, err := checkStreamName(in.LogStreamName)
	if err != nil {
		return nil, err
	}
	return &empty{}, s.Store.deleteStream(ctx, scopeOf(ctx), group, name)
}

func (s *Service) describeLogStreams(ctx context.Context, in *lt.DescribeLogStreamsRequest) (*lt.DescribeLogStreamsResponse, error) {
	groupName, err := groupOf(in.LogGroupName, in.LogGroupIdentifier)
	if err != nil {
		return nil, err
	}
	limit, err := checkLimit(in.Limit, 50, 50)
	if err != nil {
		return nil, err
	}
	q := streamQuery{prefix: deref(in.LogStreamNamePrefix), descending: deref(in.Descending), limit: limit}
	switch deref(in.OrderBy) {
	case "", "LogStreamName":
	case "LastEventTime":
		if q.prefix != "" {
			return nil, invalid("Cannot order by LastEventTime with a logStreamNamePrefix.")
		}
		q.byLastTime = true
	default:
		return nil, constraint("orderBy", *in.OrderBy, "Member must satisfy enum value set: [LogStreamName, LastEventTime]")
	}
	if in.NextToken != nil {
		n, err := strconv.Atoi(strings.TrimPrefix(*in.NextToken, "o/"))
		if err != nil || n < 0 || !strings.HasPrefix(*in.NextToken, "o/") {
			return nil, invalid("The specified nextToken is invalid.")
		}
		q.offset = n
	}
	sc := scopeOf(ctx)
	g, err := s.Store.group(ctx, s.Store.read, sc, groupName)
	if err != nil {
		return nil, err
	}
	sts, err := s.Store.streams(ctx, g.ID, q)
	if err != nil {
		return nil, err
	}
	out := &lt.DescribeLogStreamsResponse{LogStreams: []*lt.LogStream{}}
	if len(sts) > limit {
		sts = sts[:limit]
		out.NextToken = ptr(fmt.Sprintf("o/%d", q.offset+limit))
	}
	for _, st := range sts {
		out.LogStreams = append(out.LogStreams, &lt.LogStream{
			LogStreamName:       ptr(st.Name),
			Arn:                 ptr(groupARN(sc, groupName) + ":log-stream:" + st.Name),
			CreationTime:        ptr(st.Created),
			FirstEventTimestamp: st.FirstTS,
			LastEventTimestamp:  st.LastTS,
			LastIngestionTime:   st.LastIngest,
			StoredBytes:         ptr(int64(0)), // deprecated per stream: AWS reports 0
		})
	}
	return out, nil
}

// PutLogEvents limits, as AWS documents them.
const (
	maxBatchBytes   = 1 << 20
	eventOverhead   = 26
	maxBatchEvents  = 10000
	maxEventBytes   = 1<<20 - eventOverhead
	maxPast         = 14 * 24 * time.Hour
	maxFuture       = 2 * time.Hour
	maxBatchSpan    = 24 * time.Hour
	maxReturnBytes  = 1 << 20
	defaultGetLimit = 10000
)

func (s *Service) putLogEvents(ctx context.Context, in *lt.PutLogEventsRequest) (*lt.PutLogEventsResponse, error) {
	group, err := checkGroupName("logGroupName", in.LogGroupName)
	if err != nil {
		return nil, err
	}
	stream, err := checkStreamName(in.LogStreamName)
	if err != nil {
		return nil, err
	}
	if len(in.LogEvents) < 1 {
		return nil, constraint("logEvents", "[]", "Member must have length greater than or equal to 1")
	}
	if len(in.LogEvents) > maxBatchEvents {
		return nil, constraint("logEvents", fmt.Sprintf("%d events", len(in.LogEvents)), "Member must have length less than or equal to 10000")
	}
	size := 0
	for i, e := range in.LogEvents {
		if e == nil || e.Timestamp == nil || e.Message == nil {
			field := "timestamp"
			if e != nil && e.Timestamp != nil {
				field = "message"
			}
			return nil, constraint(fmt.Sprintf("logEvents.%d.member.%s", i+1, field), nil, "Member must not be null")
		}
		if len(*e.Message) < 1 {
			return nil, constraint(fmt.Sprintf("logEvents.%d.member.message", i+1), "", "Member must have length greater than or equal to 1")
		}
		if len(*e.Message) > maxEventBytes {
			return nil, invalid("Log event too large: %d bytes exceeds limit of %d", len(*e.Message), maxEventBytes)
		}
		if i > 0 && *e.Timestamp < *in.LogEvents[i-1].Timestamp {
			return nil, invalid("Log events in a single PutLogEvents request must be in chronological order.")
		}
		size += len(*e.Message) + eventOverhead
	}
	if size > maxBatchBytes {
		return nil, invalid("Upload too large: %d bytes exceeds limit of %d", size, maxBatchBytes)
	}
	sc := scopeOf(ctx)
	g, err := s.Store.group(ctx, s.Store.read, sc, group)
	if err != nil {
		return nil, err
	}
	now := s.Store.now()
	tooOld := now.Add(-maxPast).UnixMilli()
	tooNew := now.Add(maxFuture).UnixMilli()
	expired := int64(-1 << 63)
	if g.Retention != nil {
		expired = now.Add(-time.Duration(*g.Retention) * 24 * time.Hour).UnixMilli()
	}
	var info lt.RejectedLogEventsInfo
	rejected := false
	var keep []Event
	for i, e := range in.LogEvents {
		ts := *e.Timestamp
		switch {
		case ts < tooOld:
			info.TooOldLogEventEndIndex, rejected = ptr(int32(i)), true
		case ts < expired:
			info.ExpiredLogEventEndIndex, rejected = ptr(int32(i)), true
		case ts > tooNew:
			if info.TooNewLogEventStartIndex == nil {
				info.TooNewLogEventStartIndex, rejected = ptr(int32(i)), true
			}
		default:
			keep = append(keep, Event{Timestamp: ts, Message: *e.Message})
		}
	}
	if len(keep) > 1 && time.Duration(keep[len(keep)-1].Timestamp-keep[0].Timestamp)*time.Millisecond > maxBatchSpan {
		return nil, invalid("The batch of log events in a single PutLogEvents request cannot span more than 24 hours.")
	}
	if _, err := s.Store.stream(ctx, g.ID, stream); err != nil {
		return nil, err
	}
	if err := s.Store.putEvents(ctx, sc, group, stream, false, keep, nil); err != nil {
		return nil, err
	}
	out := &lt.PutLogEventsResponse{NextSequenceToken: ptr(fmt.Sprintf("%056d", now.UnixNano()))}
	if rejected {
		out.RejectedLogEventsInfo = &info
	}
	return out, nil
}

func (s *Service) getLogEvents(ctx context.Context, in *lt.GetLogEventsRequest) (*lt.GetLogEventsResponse, error) {
	groupName, err := groupOf(in.LogGroupName, in.LogGroupIdentifier)
	if err != nil {
		return nil, err
	}
	streamName, err := checkStreamName(in.LogStreamName)
	if err != nil {
		return nil, err
	}
	limit, err := checkLimit(in.Limit, defaultGetLimit, 10000)
	if err != nil {
		return nil, err
	}
	g, err := s.Store.group(ctx, s.Store.read, scopeOf(ctx), groupName)
	if err != nil {
		return nil, err
	}
	st, err := s.Store.stream(ctx, g.ID, streamName)
	if err != nil {
		return nil, err
	}
	q := eventQuery{groupID: g.ID, streamIDs: []int64{st.ID}, start: in.StartTime, end: in.EndTime, limit: limit}
	var from position
	switch {
	case in.NextToken != nil:
		dir, p, err := decodeEventToken(*in.NextToken)
		if err != nil {
			return nil, err
		}
		from, q.backward = p, dir == 'b'
	case deref(in.StartFromHead):
		from = position{TS: -1 << 62, ID: 0}
	default:
		from, q.backward = position{TS: 1<<62 - 1, ID: 1<<62 - 1}, true
	}
	if q.backward {
		q.before = &from
	} else {
		q.after = &from
	}
	evs, err := s.Store.events(ctx, q)
	if err != nil {
		return nil, err
	}
	evs = capBytes(evs)
	if q.backward {
		for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
			evs[i], evs[j] = evs[j], evs[i]
		}
	}
	out := &lt.GetLogEventsResponse{Events: make([]*lt.OutputLogEvent, 0, len(evs))}
	for _, e := range evs {
		out.Events = append(out.Events, &lt.OutputLogEvent{Timestamp: ptr(e.Timestamp), Message: ptr(e.Message), IngestionTime: ptr(e.Ingest)})
	}
	// With nothing (more) to return, the token handed back is the one that
	// came in: that is how clients know they have reached the end.
	if len(evs) == 0 {
		out.NextForwardToken = ptr(encodeEventToken('f', from))
		out.NextBackwardToken = ptr(encodeEventToken('b', from))
		if q.backward {
			out.NextForwardToken = ptr(encodeEventToken('f', position{from.TS, from.ID - 1}))
		} else {
			out.NextBackwardToken = ptr(encodeEventToken('b', position{from.TS, from.ID + 1}))
		}
		return out, nil
	}
	first, last := evs[0], evs[len(evs)-1]
	out.NextForwardToken = ptr(encodeEventToken('f', position{last.Timestamp, last.ID}))
	out.NextBackwardToken = ptr(encodeEventToken('b', position{first.Timestamp, first.ID}))
	return out, nil
}

// capBytes keeps the response within AWS's 1 MB.
func capBytes(evs []Event) []Event {
	n := 0
	for i, e := range evs {
		n += len(e.Message) + eventOverhead
		if n > maxReturnBytes && i > 0 {
			return evs[:i]
		}
	}
	return evs
}

// filterScanBudget bounds the events one FilterLogEvents call reads, so a
// rare pattern over a big group answers with a nextToken instead of making
// the client wait; AWS pages the same way.
const filterScanBudget = 200000

func (s *Service) filterLogEvents(ctx context.Context, in *lt.FilterLogEventsRequest) (*lt.FilterLogEventsResponse, error) {
	groupName, err := groupOf(in.LogGroupName, in.LogGroupIdentifier)
	if err != nil {
		return nil, err
	}
	limit, err := checkLimit(in.Limit, 10000, 10000)
	if err != nil {
		return nil, err
	}
	if in.LogStreamNames != nil && in.LogStreamNamePrefix != nil {
		return nil, invalid("logStreamNames and logStreamNamePrefix are mutually exclusive parameters.")
	}
	if len(in.LogStreamNames) > 100 {
		return nil, constraint("logStreamNames", len(in.LogStreamNames), "Member must have length less than or equal to 100")
	}
	if in.FilterPattern != nil && len(*in.FilterPattern) > 1024 {
		return nil, constraint("filterPattern", *in.FilterPattern, "Member must have length less than or equal to 1024")
	}
	pat, err := ParsePattern(deref(in.FilterPattern))
	if err != nil {
		return nil, invalid("Invalid filter pattern: %v", err)
	}
	g, err := s.Store.group(ctx, s.Store.read, scopeOf(ctx), groupName)
	if err != nil {
		return nil, err
	}
	q := eventQuery{groupID: g.ID, start: in.StartTime, prefix: deref(in.LogStreamNamePrefix), limit: 2000}
	if in.EndTime != nil {
		end := *in.EndTime + 1 // FilterLogEvents includes endTime itself
		q.end = &end
	}
	if in.LogStreamNames != nil {
		q.streamIDs = []int64{}
		for _, n := range in.LogStreamNames {
			st, err := s.Store.stream(ctx, g.ID, n)
			if err != nil {
				return nil, err
			}
			q.streamIDs = append(q.streamIDs, st.ID)
		}
	}
	from := position{TS: -1 << 62}
	if in.NextToken != nil {
		dir, p, err := decodeEventToken(*in.NextToken)
		if err != nil || dir != 'f' {
			return nil, invalid("The specified nextToken is invalid.")
		}
		from = p
	}
	out := &lt.FilterLogEventsResponse{Events: []*lt.FilteredLogEvent{}}
	names := streamNames{s: s.Store}
	scanned, bytes := 0, 0
	for {
		q.after = &from
		evs, err := s.Store.events(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			from = position{e.Timestamp, e.ID}
			scanned++
			if !pat.Match(e.Message) {
				continue
			}
			stream, err := names.name(ctx, e.StreamID)
			if err != nil {
				return nil, err
			}
			out.Events = append(out.Events, &lt.FilteredLogEvent{
				EventId:       ptr(fmt.Sprintf("%036d%020d", e.Timestamp, e.ID)),
				IngestionTime: ptr(e.Ingest),
				LogStreamName: ptr(stream),
				Message:       ptr(e.Message),
				Timestamp:     ptr(e.Timestamp),
			})
			bytes += len(e.Message) + eventOverhead
			if len(out.Events) >= limit || bytes >= maxReturnBytes {
				out.NextToken = ptr(encodeEventToken('f', from))
				return out, nil
			}
		}
		if len(evs) < q.limit {
			return out, nil
		}
		if scanned >= filterScanBudget || ctx.Err() != nil {
			out.NextToken = ptr(encodeEventToken('f', from))
			return out, nil
		}
	}
}

func (s *Service) putRetentionPolicy(ctx context.Context, in *lt.PutRetentionPolicyRequest) (*empty, error) {
	name, err := checkGroupName("logGroupName", in.LogGroupName)
	if err != nil {
		return nil, err
	}
	if in.RetentionInDays == nil {
		return nil, constraint("retentionInDays", nil, "Member must not be null")
	}
	d := *in.RetentionInDays
	i := sort.Search(len(retentionDays), func(i int) bool { return retentionDays[i] >= d })
	if i == len(retentionDays) || retentionDays[i] != d {
		return nil, constraint("retentionInDays", d, "Member must satisfy enum value set: [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]")
	}
	return &empty{}, s.Store.updateGroup(ctx, scopeOf(ctx), name, func(g *group) { g.Retention = &d })
}

func (s *Service) deleteRetentionPolicy(ctx context.Context, in *lt.DeleteRetentionPolicyRequest) (*empty, error) {
	name, err := checkGroupName("logGroupName", in.LogGroupName)
	if err != nil {
		return nil, err
	}
	return &empty{}, s.Store.updateGroup(ctx, scopeOf(ctx), name, func(g *group) { g.Retention = nil })
}

func (s *Service) tag(ctx context.Context, name string, tags map[string]string) error {
	if len(tags) == 0 {
		return constraint("tags", nil, "Member must have length greater than or equal to 1")
	}
	if err := checkTags(tags); err != nil {
		return err
	}
	var tooMany bool
	err := s.Store.updateGroup(ctx, scopeOf(ctx), name, func(g *group) {
		if g.Tags == nil {
			g.Tags = map[string]string{}
		}
		for k, v := range tags {
			g.Tags[k] = v
		}
		tooMany = len(g.Tags) > 50
	})
	if err == nil && tooMany {
		// Checked after the merge, so undo it: a group never holds more than 50.
		s.Store.updateGroup(ctx, scopeOf(ctx), name, func(g *group) {
			for k := range tags {
				delete(g.Tags, k)
			}
		})
		return invalid("A log group can have at most 50 tags.")
	}
	return err
}

func (s *Service) untag(ctx context.Context, name string, keys []string) error {
	if len(keys) == 0 {
		return constraint("tags", nil, "Member must have length greater than or equal to 1")
	}
	return s.Store.updateGroup(ctx, scopeOf(ctx), name, func(g *group) {
		for _, k := range keys {
			delete(g.Tags, k)
		}
	})
}

func (s *Service) tagLogGroup(ctx context.Context, in *lt.TagLogGroupRequest) (*empty, error) {
	name, err := checkGroupName("logGroupName", in.LogGroupName)
	if err != nil {
		return nil, err
	}
	return &empty{}, s.tag(ctx, name, in.Tags)
}

func (s *Service) untagLogGroup(ctx context.Context, in *lt.UntagLogGroupRequest) (*empty, error) {
	name, err := checkGroupName("logGroupName", in.LogGroupName)
	if err != nil {
		return nil, err
	}
	return &empty{}, s.untag(ctx, name, in.Tags)
}

func (s *Service) listTagsLogGroup(ctx context.Context, in *lt.ListTagsLogGroupRequest) (*lt.ListTagsLogGroupResponse, error) {
	name, err := checkGroupName("logGroupName", in.LogGroupName)
	if err != nil {
		return nil, err
	}
	g, err := s.Store.group(ctx, s.Store.read, scopeOf(ctx), name)
	if err != nil {
		return nil, err
	}
	return &lt.ListTagsLogGroupResponse{Tags: orEmpty(g.Tags)}, nil
}

// groupFromARN reads the group out of a resource ARN of this scope.
func groupFromARN(ctx context.Context, arn *string) (string, error) {
	if arn == nil {
		return "", constraint("resourceArn", nil, "Member must not be null")
	}
	sc := scopeOf(ctx)
	prefix := groupARN(sc, "")
	name := strings.TrimSuffix(strings.TrimPrefix(*arn, prefix), ":*")
	if !strings.HasPrefix(*arn, prefix) || strings.Contains(name, ":") {
		return "", errNotFound(fmt.Sprintf("The specified resource %s does not exist.", *arn))
	}
	return checkGroupName("resourceArn", &name)
}

func (s *Service) tagResource(ctx context.Context, in *lt.TagResourceRequest) (*empty, error) {
	name, err := groupFromARN(ctx, in.ResourceArn)
	if err != nil {
		return nil, err
	}
	return &empty{}, s.tag(ctx, name, in.Tags)
}

func (s *Service) untagResource(ctx context.Context, in *lt.UntagResourceRequest) (*empty, error) {
	name, err := groupFromARN(ctx, in.ResourceArn)
	if err != nil {
		return nil, err
	}
	return &empty{}, s.untag(ctx, name, in.TagKeys)
}

func (s *Service) listTagsForResource(ctx context.Context, in *lt.ListTagsForResourceRequest) (*lt.ListTagsForResourceResponse, error) {
	name, err := groupFromARN(ctx, in.ResourceArn)
	if err != nil {
		return nil, err
	}
	g, err := s.Store.group(ctx, s.Store.read, scopeOf(ctx), name)
	if err != nil {
		return nil, err
	}
	return &lt.ListTagsForResourceResponse{Tags: orEmpty(g.Tags)}, nil
}

// Tokens. Event tokens look like AWS's (f/<digits>/s, b/<digits>/s) and
// carry the position of the event they continue from.

func encodeEventToken(dir byte, p position) string {
	return fmt.Sprintf("%c/%020d%020d/s", dir, uint64(p.TS+1<<62), uint64(p.ID+1<<62))
}

func decodeEventToken(tok string) (byte, position, error) {
	bad := invalid("The specified nextToken is invalid.")
	if len(tok) != 2+40+2 || (tok[0] != 'f' && tok[0] != 'b') || tok[1] != '/' || !strings.HasSuffix(tok, "/s") {
		return 0, position{}, bad
	}
	ts, err1 := strconv.ParseUint(tok[2:22], 10, 64)
	id, err2 := strconv.ParseUint(tok[22:42], 10, 64)
	if err1 != nil || err2 != nil || ts >= 1<<63 || id >= 1<<63 {
		return 0, position{}, bad
	}
	return tok[0], position{int64(ts) - 1<<62, int64(id) - 1<<62}, nil
}

func encodeNameToken(name string) string { return "n/" + name }

func decodeNameToken(tok string) (string, error) {
	if !strings.HasPrefix(tok, "n/") || !utf8.ValidString(tok) {
		return "", invalid("The specified nextToken is invalid.")
	}
	return tok[2:], nil
}

func ptr[T any](v T) *T { return &v }

func deref[T any](p *T) T {
	if p == nil {
		var z T
		return z
	}
	return *p
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
