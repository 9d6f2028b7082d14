// Command scalechart summarises the output of the bench module's Scale
// benchmarks (BenchmarkScale and BenchmarkScaleNotify): markdown tables of
// each metric's median per size and implementation, the growth of hit p99
// from the smallest size to the largest, and a chart of the medians
// against the size, on a logarithmic axis.
//
//	go run ./cmd/scalechart -in scale.txt -chart scale.png > scale.md
package main

import (
	"bufio"
	"cmp"
	"flag"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/agentcache/cache/bench/internal/benchio"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// point identifies the samples of one implementation at one size of a
// family ("entries" or "watchers").
type point struct {
	family, impl string
	size         int
}

// data holds every sample of a results file.
type data struct {
	header   []string            // the agentcache, goos, goarch and cpu lines
	families []string            // in order of appearance
	impls    map[string][]string // per family, in order of appearance
	units    map[string][]string // per family, in order of appearance
	sizes    map[string][]int    // per family, ascending
	samples  map[point]map[string][]float64
}

// scaleLine matches a result line of a Scale benchmark: its family, size,
// implementation (none for Notify) and, after the CPU suffix, the rest.
var scaleLine = regexp.MustCompile(`^BenchmarkScale(?:Notify)?/(\w+)=(\d+)(?:/([\w-]+?))?(?:-\d+)?\s+\d+\s+(.*)$`)

// read parses `go test -bench` output, keeping the Scale results and the
// header lines.
func read(r io.Reader) (*data, error) {
	d := &data{
		impls:   map[string][]string{},
		units:   map[string][]string{},
		sizes:   map[string][]int{},
		samples: map[point]map[string][]float64{},
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		for _, h := range []string{"agentcache:", "goos:", "goarch:", "cpu:"} {
			if strings.HasPrefix(line, h) && !slices.Contains(d.header, line) {
				d.header = append(d.header, line)
			}
		}
		m := scaleLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		size, err := strconv.Atoi(m[2])
		if err != nil {
			return nil, fmt.Errorf("%q: bad size", line)
		}
		impl := m[3]
		if impl == "" {
			impl = "agentcache"
		}
		if err := d.add(point{m[1], impl, size}, strings.Fields(m[4])); err != nil {
			return nil, fmt.Errorf("%q: %v", line, err)
		}
	}
	for _, s := range d.sizes {
		slices.Sort(s)
	}
	return d, sc.Err()
}

// add records the value-unit pairs of one result line at p.
func (d *data) add(p point, pairs []string) error {
	if len(pairs)%2 != 0 {
		return fmt.Errorf("odd number of value and unit fields")
	}
	f := p.family
	d.families = addNew(d.families, f)
	d.impls[f] = addNew(d.impls[f], p.impl)
	d.sizes[f] = addNew(d.sizes[f], p.size)
	if d.samples[p] == nil {
		d.samples[p] = map[string][]float64{}
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		v, err := strconv.ParseFloat(pairs[i], 64)
		if err != nil {
			return fmt.Errorf("bad value %q", pairs[i])
		}
		unit := pairs[i+1]
		if unit == "ns/op" {
			continue // the time of a whole op: fills, collections, samples
		}
		d.samples[p][unit] = append(d.samples[p][unit], v)
		d.units[f] = addNew(d.units[f], unit)
	}
	return nil
}

// addNew returns s with v appended, unless it is there already.
func addNew[T comparable](s []T, v T) []T {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// med returns the median of unit at p and the number of samples; NaN if
// there are none.
func (d *data) med(p point, unit string) (float64, int) {
	xs := slices.Clone(d.samples[p][unit])
	if len(xs) == 0 {
		return math.NaN(), 0
	}
	slices.Sort(xs)
	n := len(xs)
	return (xs[(n-1)/2] + xs[n/2]) / 2, n
}

// num prints v with three significant digits, or as an integer with
// thousands separators from 1000 on.
func num(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	if math.Abs(v) < 1000 {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	digits := strconv.FormatInt(int64(math.Round(v)), 10)
	var b strings.Builder
	for i := range len(digits) {
		if i > 0 && (len(digits)-i)%3 == 0 && digits[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteByte(digits[i])
	}
	return b.String()
}

// sizeName prints a size as a power of ten ("10^4") when it is one.
func sizeName(n int) string {
	e := math.Log10(float64(n))
	if n > 0 && e == math.Trunc(e) {
		return "10^" + strconv.Itoa(int(e))
	}
	return strconv.Itoa(n)
}

// familyTitle heads each family's table and names its x axis.
var familyTitle = map[string]string{
	"entries":  "BenchmarkScale: entries",
	"watchers": "BenchmarkScaleNotify: watchers",
}

// writeTables prints a markdown table per family, a row per size and
// implementation, a column per metric (the median of its samples), then
// how much hit p99 grew from the smallest size to the largest.
func writeTables(w io.Writer, d *data) {
	fmt.Fprintf(w, "# Cost as work grows\n\n")
	if len(d.header) > 0 {
		fmt.Fprintf(w, "%s\n\n", strings.Join(d.header, ", "))
	}
	fmt.Fprintf(w, "Median of the runs of each cell (n = runs). See README.md for what each metric is.\n")
	for _, f := range d.families {
		units := d.units[f]
		fmt.Fprintf(w, "\n## %s\n\n", cmp.Or(familyTitle[f], f))
		fmt.Fprintf(w, "| %s | impl | n | %s |\n", f, strings.Join(units, " | "))
		fmt.Fprintf(w, "|---:|---|---:|%s\n", strings.Repeat("---:|", len(units)))
		for _, size := range d.sizes[f] {
			for _, im := range d.impls[f] {
				p := point{f, im, size}
				if d.samples[p] == nil {
					continue
				}
				_, n := d.med(p, units[0])
				row := []string{sizeName(size), im, strconv.Itoa(n)}
				for _, u := range units {
					v, _ := d.med(p, u)
					row = append(row, num(v))
				}
				fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
			}
		}
		writeGrowth(w, d, f, "hit-p99-ns")
	}
}

// writeGrowth prints, for each implementation of family f, unit's median
// at the largest size over that at the smallest.
func writeGrowth(w io.Writer, d *data, f, unit string) {
	sizes := d.sizes[f]
	if !slices.Contains(d.units[f], unit) || len(sizes) < 2 {
		return
	}
	lo, hi := sizes[0], sizes[len(sizes)-1]
	fmt.Fprintf(w, "\n%s at %s over %s:", unit, sizeName(hi), sizeName(lo))
	for _, im := range d.impls[f] {
		a, _ := d.med(point{f, im, lo}, unit)
		b, _ := d.med(point{f, im, hi}, unit)
		fmt.Fprintf(w, " %s %.1f× (%s → %s ns);", im, b/a, num(a), num(b))
	}
	fmt.Fprintln(w)
}

// panelSpec is one panel of the chart: a line per implementation and unit
// of a family, against its size.
type panelSpec struct {
	family, title, yLabel string
	units                 []string // drawn solid, dashed, dotted
	logY                  bool
}

var panels = []panelSpec{
	{"entries", "Hit time per Get (p50 solid, p99 dashed)", "ns", []string{"hit-p50-ns", "hit-p99-ns"}, true},
	{"entries", "Fill time per entry (a miss each, through Get)", "ns/entry", []string{"fill-ns/entry"}, true},
	{"entries", "Live heap per entry", "B/entry", []string{"B/entry"}, false},
	{"watchers", "Notify: one change delivered to every watcher", "ms/change", []string{"ms/change"}, true},
	{"watchers", "Notify: live heap and stacks per idle watcher", "B/watcher", []string{"B/watcher"}, false},
	{"watchers", "Notify: delivery time per watcher", "ns/event", []string{"ns/event"}, false},
}

// implColors colours each implementation's lines, in order of appearance.
var implColors = []color.Color{
	color.RGBA{0x1f, 0x77, 0xb4, 0xff},
	color.RGBA{0xff, 0x7f, 0x0e, 0xff},
	color.RGBA{0x7f, 0x7f, 0x7f, 0xff},
	color.RGBA{0xd6, 0x27, 0x28, 0xff},
}

// unitDashes are the line styles of a panel's first, second and third unit.
var unitDashes = [][]vg.Length{nil, {vg.Points(6), vg.Points(3)}, {vg.Points(2), vg.Points(2)}}

// powTicks marks the powers of ten of a logarithmic size axis, labelled
// 10³, 10⁴, ...
type powTicks struct{}

func (powTicks) Ticks(min, max float64) []plot.Tick {
	var ticks []plot.Tick
	k0 := int(math.Floor(math.Log10(min)))
	for k := k0; k < k0+40 && math.Pow(10, float64(k)) <= max; k++ {
		if v := math.Pow(10, float64(k)); v >= min {
			ticks = append(ticks, plot.Tick{Value: v, Label: "10" + superscript(k)})
		}
	}
	return ticks
}

// supDigits are the superscript digits 0 to 9.
var supDigits = []string{"⁰", "¹", "²", "³", "⁴", "⁵", "⁶", "⁷", "⁸", "⁹"}

// superscript writes k in superscript digits.
func superscript(k int) string {
	var b strings.Builder
	for _, c := range strconv.Itoa(k) {
		if c == '-' {
			b.WriteString("⁻")
			continue
		}
		b.WriteString(supDigits[c-'0'])
	}
	return b.String()
}

// panel draws spec, or returns nil if d has none of its metrics.
func panel(d *data, spec panelSpec) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = spec.title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Label.Text = spec.family + " (log scale)"
	p.Y.Label.Text = spec.yLabel + " (median; lower is better)"
	p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, powTicks{}
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Add(plotter.NewGrid())

	lo, hi := math.Inf(1), math.Inf(-1)
	for i, im := range d.impls[spec.family] {
		for j, unit := range spec.units {
			xys := d.line(spec.family, im, unit, spec.logY)
			if len(xys) == 0 {
				continue
			}
			l, pts, err := plotter.NewLinePoints(xys)
			if err != nil {
				return nil, err
			}
			c := implColors[i%len(implColors)]
			l.Color, pts.Color = c, c
			l.Width = vg.Points(1.5)
			l.Dashes = unitDashes[j%len(unitDashes)]
			p.Add(l, pts)
			p.Legend.Add(im+" "+unit, l, pts)
			for _, xy := range xys {
				lo, hi = math.Min(lo, xy.Y), math.Max(hi, xy.Y)
			}
		}
	}
	if math.IsInf(lo, 1) {
		return nil, nil
	}
	sizes := d.sizes[spec.family]
	p.X.Min, p.X.Max = float64(sizes[0])/2, float64(sizes[len(sizes)-1])*2
	if spec.logY {
		p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
		p.Y.Min, p.Y.Max = lo/2, hi*4 // headroom for the legend
	} else {
		p.Y.Min, p.Y.Max = 0, hi*1.35
	}
	return p, nil
}

// line returns the medians of unit for im, one point per size; only the
// positive ones for a logarithmic axis.
func (d *data) line(f, im, unit string, positive bool) plotter.XYs {
	var xys plotter.XYs
	for _, size := range d.sizes[f] {
		v, n := d.med(point{f, im, size}, unit)
		if n == 0 || (positive && v <= 0) {
			continue
		}
		xys = append(xys, plotter.XY{X: float64(size), Y: v})
	}
	return xys
}

// writeChart renders the panels that have data, two a row, as a PNG.
func writeChart(path string, d *data) error {
	var plots []*plot.Plot
	for _, spec := range panels {
		p, err := panel(d, spec)
		if err != nil {
			return err
		}
		if p != nil {
			plots = append(plots, p)
		}
	}
	if len(plots) == 0 {
		return fmt.Errorf("no Scale results to chart")
	}
	const cols = 2
	rows := (len(plots) + cols - 1) / cols
	img, dc := benchio.NewCanvas(14*vg.Inch, vg.Length(rows)*4.4*vg.Inch)
	pad := vg.Points(14)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadTop: pad, PadBottom: pad, PadLeft: pad, PadRight: pad, PadX: 2 * pad, PadY: 2 * pad}
	for i, p := range plots {
		p.Draw(tiles.At(dc, i%cols, i/cols))
	}
	return benchio.WritePNG(path, img)
}

func main() {
	in := flag.String("in", "scale.txt", "`file` of go test -bench output (- for standard input)")
	chart := flag.String("chart", "scale.png", "PNG `file` to write the chart to (empty: none)")
	flag.Parse()
	if err := run(*in, *chart); err != nil {
		fmt.Fprintln(os.Stderr, "scalechart:", err)
		os.Exit(1)
	}
}

// run reads in, prints the tables on standard output and writes the chart.
func run(in, chart string) error {
	r, err := benchio.Open(in)
	if err != nil {
		return err
	}
	defer r.Close()
	d, err := read(r)
	if err != nil {
		return err
	}
	if len(d.families) == 0 {
		return fmt.Errorf("no Scale results in %s", in)
	}
	writeTables(os.Stdout, d)
	if chart == "" {
		return nil
	}
	return writeChart(chart, d)
}
