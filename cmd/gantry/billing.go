package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/gantry-dev/gantry/internal/billing"
	"github.com/gantry-dev/gantry/internal/server"
)

const billingUsage = `Usage:
  gantry billing report [--from T] [--to T] [--group-by DIMS] [--format table|csv|json]
  gantry billing budgets [list]
  gantry billing budgets set --name NAME --limit USD [--threshold PCT] [--cluster C | --tag KEY=VALUE]
  gantry billing budgets delete --name NAME

The server answers (it holds the metered usage); the command signs its
requests with the account's key, like the aws CLI. Times are UTC:
2026-01-31, 2026-01-31T13 or RFC 3339; --to is exclusive. DIMS is a
comma-separated list of cluster, service, family, task, tag:KEY, day,
hour, month, usage-type, capacity.
`

func runBilling(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, billingUsage)
		os.Exit(2)
	}
	switch args[0] {
	case "report":
		return billingReport(ctx, args[1:])
	case "budgets":
		return billingBudgets(ctx, args[1:])
	case "-h", "--help", "help":
		fmt.Print(billingUsage)
		return nil
	}
	fmt.Fprintf(os.Stderr, "gantry billing: unknown command %q\n\n%s", args[0], billingUsage)
	os.Exit(2)
	return nil
}

// billingClient calls the server's GantryBilling API.
type billingClient struct {
	endpoint string
	creds    aws.Credentials
	region   string
}

func clientFlags(fs *flag.FlagSet) func() (*billingClient, error) {
	def := os.Getenv("AWS_ENDPOINT_URL")
	if def == "" {
		def = "http://127.0.0.1:8910"
	}
	endpoint := fs.String("endpoint", def, "the server's endpoint URL (default $AWS_ENDPOINT_URL)")
	dataDir := fs.String("data-dir", "/var/lib/gantry", "the server's data directory, for its credentials when AWS_ACCESS_KEY_ID is not set")
	return func() (*billingClient, error) {
		c := &billingClient{endpoint: strings.TrimRight(*endpoint, "/")}
		if k, s := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"); k != "" && s != "" {
			c.creds = aws.Credentials{AccessKeyID: k, SecretAccessKey: s, SessionToken: os.Getenv("AWS_SESSION_TOKEN")}
			c.region = os.Getenv("AWS_REGION")
			if c.region == "" {
				c.region = os.Getenv("AWS_DEFAULT_REGION")
			}
		} else {
			creds, err := server.LoadCredentials(*dataDir)
			if err != nil {
				return nil, fmt.Errorf("%w (run `eval \"$(gantry env)\"` or pass --data-dir)", err)
			}
			c.creds = aws.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey}
			c.region = creds.Region
		}
		if c.region == "" {
			c.region = "us-east-1"
		}
		return c, nil
	}
}

func (c *billingClient) call(ctx context.Context, op string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint+"/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", billing.GantryTargetPrefix+"."+op)
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(ctx, c.creds, req, hex.EncodeToString(sum[:]), "ce", c.region, time.Now()); err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w (is `gantry server` running? pass --endpoint)", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Type    string `json:"__type"`
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &e) == nil && e.Type != "" {
			return fmt.Errorf("%s: %s", e.Type, e.Message)
		}
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return json.Unmarshal(b, out)
}

func billingReport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gantry billing report", flag.ExitOnError)
	from := fs.String("from", "", "start, inclusive (default: the first of this month)")
	to := fs.String("to", "", "end, exclusive (default: the end of this hour)")
	groupBy := fs.String("group-by", "", "comma-separated: cluster, service, family, task, tag:KEY, day, hour, month, usage-type, capacity")
	format := fs.String("format", "table", "table, csv or json")
	client := clientFlags(fs)
	fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("billing report: unexpected argument %q", fs.Arg(0))
	}
	in := billing.ReportInput{GroupBy: []string{}}
	for _, s := range []struct {
		flag string
		val  *string
		dst  *string
	}{{"--from", from, &in.From}, {"--to", to, &in.To}} {
		if *s.val == "" {
			continue
		}
		t, err := billing.ParseTime(*s.val)
		if err != nil {
			return fmt.Errorf("%s: %v", s.flag, err)
		}
		*s.dst = t.Format(time.RFC3339)
	}
	if *groupBy != "" {
		for _, g := range strings.Split(*groupBy, ",") {
			g = strings.TrimSpace(g)
			if _, err := billing.ParseDim(g); err != nil {
				return fmt.Errorf("--group-by: %v", err)
			}
			in.GroupBy = append(in.GroupBy, g)
		}
	}
	switch *format {
	case "table", "csv", "json":
	default:
		return fmt.Errorf("--format: %q is not table, csv or json", *format)
	}
	c, err := client()
	if err != nil {
		return err
	}
	var out billing.ReportOutput
	if err := c.call(ctx, "GetReport", &in, &out); err != nil {
		return err
	}
	return writeReport(os.Stdout, &out, *format)
}

func writeReport(w io.Writer, r *billing.ReportOutput, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case "csv":
		cw := csv.NewWriter(w)
		header := append(append([]string{}, r.GroupBy...), "vcpu_hours", "gb_hours", "ephemeral_storage_gb_hours", "cost_usd")
		cw.Write(header)
		for _, row := range r.Rows {
			cw.Write(append(append([]string{}, row.Keys...), row.VCPUHours, row.GBHours, row.StorageGBHours, row.Cost))
		}
		total := make([]string, max(len(r.GroupBy), 1))
		total[0] = "TOTAL"
		cw.Write(append(total, r.Total.VCPUHours, r.Total.GBHours, r.Total.StorageGBHours, r.Total.Cost))
		cw.Flush()
		return cw.Error()
	}
	fmt.Fprintf(w, "Fargate usage %s to %s (%s)\n\n", r.From, r.To, r.Currency)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	cols := append(upper(r.GroupBy), "VCPU-HOURS", "GB-HOURS", "STORAGE-GB-HOURS", "COST")
	fmt.Fprintln(tw, strings.Join(cols, "\t")+"\t")
	for _, row := range r.Rows {
		keys := make([]string, len(row.Keys))
		for i, k := range row.Keys {
			keys[i] = k
			if k == "" {
				keys[i] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(append(keys, row.VCPUHours, row.GBHours, row.StorageGBHours, "$"+row.Cost), "\t")+"\t")
	}
	total := make([]string, max(len(r.GroupBy), 1))
	total[0] = "TOTAL"
	fmt.Fprintln(tw, strings.Join(append(total, r.Total.VCPUHours, r.Total.GBHours, r.Total.StorageGBHours, "$"+r.Total.Cost), "\t")+"\t")
	return tw.Flush()
}

func upper(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToUpper(s)
	}
	return out
}

func billingBudgets(ctx context.Context, args []string) error {
	sub := "list"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("gantry billing budgets "+sub, flag.ExitOnError)
	client := clientFlags(fs)
	format := fs.String("format", "table", "table or json")
	var name, limit, threshold, cluster, tag *string
	switch sub {
	case "list":
	case "set":
		name = fs.String("name", "", "the budget's name")
		limit = fs.String("limit", "", "monthly limit in USD")
		threshold = fs.String("threshold", "80", "percent of the limit that raises an event")
		cluster = fs.String("cluster", "", "count only this cluster's tasks")
		tag = fs.String("tag", "", "count only tasks tagged KEY=VALUE")
	case "delete":
		name = fs.String("name", "", "the budget's name")
	default:
		return fmt.Errorf("billing budgets: unknown command %q (list, set or delete)", sub)
	}
	fs.Parse(args)
	c, err := client()
	if err != nil {
		return err
	}
	switch sub {
	case "set":
		var st billing.BudgetStatus
		if err := c.call(ctx, "PutBudget", &billing.PutBudgetInput{Name: *name, Limit: *limit, Threshold: *threshold, Cluster: *cluster, Tag: *tag}, &st); err != nil {
			return err
		}
		return writeBudgets(os.Stdout, []billing.BudgetStatus{st}, *format)
	case "delete":
		var out struct{}
		return c.call(ctx, "DeleteBudget", &billing.DeleteBudgetInput{Name: *name}, &out)
	}
	var out billing.BudgetsOutput
	if err := c.call(ctx, "DescribeBudgets", struct{}{}, &out); err != nil {
		return err
	}
	return writeBudgets(os.Stdout, out.Budgets, *format)
}

func writeBudgets(w io.Writer, bs []billing.BudgetStatus, format string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"budgets": bs})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSCOPE\tLIMIT\tTHRESHOLD\tMONTH\tSPENT\tPERCENT\tEVENTS")
	for _, b := range bs {
		scope := "account"
		if b.Cluster != "" {
			scope = "cluster " + b.Cluster
		} else if b.TagKey != "" {
			scope = "tag " + b.TagKey + "=" + b.TagValue
		}
		var evs []string
		for _, e := range b.Events {
			evs = append(evs, fmt.Sprintf("%s %s crossed at %s%% ($%s) %s", e.Month, e.Kind, e.Percent, e.Spent, e.At))
		}
		if len(evs) == 0 {
			evs = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%s\t$%s\t%s%%\t%s\t$%s\t%s%%\t%s\n", b.Name, scope, b.Limit, b.Threshold, b.Month, b.Spent, b.Percent, strings.Join(evs, "; "))
	}
	return tw.Flush()
}
