// Package billing meters Fargate usage per second, prices it, and answers
// reports: `gantry billing`, the Cost Explorer API subset and budgets.
//
// The meter derives usage from the stored task records (model.KindTask) and
// writes durable usage records of its own (KindUsage), one per task and
// clock hour, each carrying the prices it was billed at. Everything after
// that is exact: quantities are integers (CPU-unit-milliseconds,
// MiB-milliseconds, GiB-milliseconds) and each record's cost is computed once
// with decimal arithmetic and rounded to 1e-10 USD, so any grouping of the
// records adds up to the same total.
package billing

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shopspring/decimal"
)

// Usage-type suffixes, named as AWS names them; a region prefix (USE1-)
// makes the full usage type.
const (
	UTvCPU         = "Fargate-vCPU-Hours:perCPU"
	UTGB           = "Fargate-GB-Hours"
	UTStorage      = "Fargate-EphemeralStorage-GB-Hours"
	UTARMvCPU      = "Fargate-ARM-vCPU-Hours:perCPU"
	UTARMGB        = "Fargate-ARM-GB-Hours"
	UTARMStorage   = "Fargate-ARM-EphemeralStorage-GB-Hours"
	spotPrefix     = "SpotUsage-"
	priceFileName  = "prices.json"
	defaultCurency = "USD"
)

// DefaultPrices are the us-east-1 Linux figures of fargate-facts.md. Fargate
// Spot is priced at its largest advertised discount (70% off) for vCPU and
// memory; ephemeral storage costs the same on Spot.
var DefaultPrices = map[string]string{
	UTvCPU:                    "0.04048",
	UTGB:                      "0.004445",
	UTStorage:                 "0.000111",
	UTARMvCPU:                 "0.03238",
	UTARMGB:                   "0.00356",
	UTARMStorage:              "0.000111",
	spotPrefix + UTvCPU:       "0.012144",
	spotPrefix + UTGB:         "0.0013335",
	spotPrefix + UTStorage:    "0.000111",
	spotPrefix + UTARMvCPU:    "0.009714",
	spotPrefix + UTARMGB:      "0.001068",
	spotPrefix + UTARMStorage: "0.000111",
}

// PriceFile is the price list's on-disk form (DATA_DIR/prices.json): USD per
// unit-hour by usage type without its region prefix.
type PriceFile struct {
	Currency string            `json:"currency"`
	Prices   map[string]string `json:"prices"`
}

// PriceList is a parsed price list.
type PriceList struct {
	Currency string
	Prices   map[string]decimal.Decimal
}

// ParsePriceFile parses and checks a price list: every usage type Gantry
// bills must have a non-negative decimal price.
func ParsePriceFile(b []byte) (*PriceList, error) {
	var f PriceFile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("price list: %w", err)
	}
	return priceList(f)
}

func priceList(f PriceFile) (*PriceList, error) {
	pl := &PriceList{Currency: f.Currency, Prices: map[string]decimal.Decimal{}}
	if pl.Currency == "" {
		pl.Currency = defaultCurency
	}
	for ut, s := range f.Prices {
		if _, known := DefaultPrices[ut]; !known {
			return nil, fmt.Errorf("price list: unknown usage type %q (known: %s)", ut, strings.Join(knownUsageTypes(), ", "))
		}
		d, err := decimal.NewFromString(s)
		if err != nil || d.IsNegative() {
			return nil, fmt.Errorf("price list: price of %s: %q is not a non-negative decimal", ut, s)
		}
		pl.Prices[ut] = d
	}
	for ut := range DefaultPrices {
		if _, ok := pl.Prices[ut]; !ok {
			return nil, fmt.Errorf("price list: no price for %s", ut)
		}
	}
	return pl, nil
}

func knownUsageTypes() []string {
	var out []string
	for ut := range DefaultPrices {
		out = append(out, ut)
	}
	sort.Strings(out)
	return out
}

// Defaults returns the default price list.
func Defaults() *PriceList {
	pl, err := priceList(PriceFile{Currency: defaultCurency, Prices: DefaultPrices})
	if err != nil {
		panic(err)
	}
	return pl
}

// DefaultPriceFile is the default list as a file, written on first start so
// it can be edited.
func DefaultPriceFile() []byte {
	b, _ := json.MarshalIndent(PriceFile{Currency: defaultCurency, Prices: DefaultPrices}, "", "  ")
	return append(b, '\n')
}

// Prices serves the price list from a file, re-read whenever the file
// changes (no restart needed). A file that does not parse is logged and the
// last good list stays in force; no file means the defaults.
type Prices struct {
	Path string
	Log  *slog.Logger

	mu      sync.Mutex
	list    *PriceList
	modTime time.Time
	size    int64
	loaded  bool
	lastErr string
}

// Current returns the price list in force now.
func (p *Prices) Current() *PriceList {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.list == nil {
		p.list = Defaults()
	}
	if p.Path == "" {
		return p.list
	}
	fi, err := os.Stat(p.Path)
	if err != nil {
		if p.loaded && os.IsNotExist(err) {
			p.list, p.loaded, p.modTime, p.size = Defaults(), false, time.Time{}, 0
			p.logf("price list removed; using the default prices", "path", p.Path)
		}
		return p.list
	}
	if p.loaded && fi.ModTime().Equal(p.modTime) && fi.Size() == p.size {
		return p.list
	}
	b, err := os.ReadFile(p.Path)
	if err != nil {
		return p.list
	}
	pl, err := ParsePriceFile(b)
	p.modTime, p.size, p.loaded = fi.ModTime(), fi.Size(), true
	if err != nil {
		if err.Error() != p.lastErr {
			p.logf("price list not loaded; keeping the previous prices", "path", p.Path, "err", err)
		}
		p.lastErr = err.Error()
		return p.list
	}
	p.lastErr = ""
	p.list = pl
	if p.Log != nil {
		p.Log.Info("price list loaded", "path", p.Path)
	}
	return p.list
}

func (p *Prices) logf(msg string, args ...any) {
	if p.Log != nil {
		p.Log.Warn(msg, args...)
	}
}

// EnsurePriceFile writes the default price list under dataDir when there is
// none, and returns its path.
func EnsurePriceFile(dataDir string) (string, error) {
	path := dataDir + "/" + priceFileName
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	return path, os.WriteFile(path, DefaultPriceFile(), 0o644)
}

// regionCodes are the usage-type prefixes AWS gives regions.
var regionCodes = map[string]string{
	"us-east-1": "USE1", "us-east-2": "USE2", "us-west-1": "USW1", "us-west-2": "USW2",
	"ca-central-1": "CAN1", "sa-east-1": "SAE1",
	"eu-west-1": "EU", "eu-west-2": "EUW2", "eu-west-3": "EUW3", "eu-central-1": "EUC1",
	"eu-central-2": "EUC2", "eu-north-1": "EUN1", "eu-south-1": "EUS1",
	"ap-northeast-1": "APN1", "ap-northeast-2": "APN2", "ap-northeast-3": "APN3",
	"ap-southeast-1": "APS1", "ap-southeast-2": "APS2", "ap-south-1": "APS3",
	"me-south-1": "MES1", "af-south-1": "AFS1",
}

// RegionCode is the usage-type prefix for a region (USE1 for us-east-1).
func RegionCode(region string) string {
	if c, ok := regionCodes[region]; ok {
		return c
	}
	return strings.ToUpper(strings.ReplaceAll(region, "-", ""))
}
