// Command table summarises `go test -bench` output: the median of every
// metric for each benchmark, implementation and CPU count, as markdown
// tables with each implementation's ratio to the floor, and a bar chart of
// the ns/op medians.
//
//	go run ./cmd/table -in results.txt -chart chart.png > results.md
package main

import (
	"bufio"
	"flag"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/agentcache/cache/bench/internal/benchio"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// floorImpl is the implementation the others are compared with.
const floorImpl = "floor"

// cell identifies the samples of one benchmark run with one CPU count.
type cell struct {
	workload, impl string
	cpu            int
}

// results holds every sample of a results file, in the file's order.
type results struct {
	header    []string // agentcache (from run.sh), goos, goarch, pkg, cpu lines
	workloads []string
	impls     map[string][]string // per workload, in order of appearance
	cpus      []int
	units     map[string][]string // per workload: units seen, in order
	samples   map[cell]map[string][]float64
}

var cpuSuffix = regexp.MustCompile(`^(.*)-(\d+)$`)

// parse reads `go test -bench` output. Lines other than benchmark results
// and the goos/goarch/pkg/cpu header are ignored.
func parse(r io.Reader) (*results, error) {
	res := &results{
		impls:   map[string][]string{},
		units:   map[string][]string{},
		samples: map[cell]map[string][]float64{},
	}
	seenHeader := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		for _, h := range []string{"agentcache:", "goos:", "goarch:", "pkg:", "cpu:"} {
			if strings.HasPrefix(line, h) && !seenHeader[line] {
				seenHeader[line] = true
				res.header = append(res.header, line)
			}
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		// Name, iterations, then value-unit pairs.
		if len(f) < 4 || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		cpu := 1 // go test omits the suffix for GOMAXPROCS=1
		if m := cpuSuffix.FindStringSubmatch(name); m != nil {
			name = m[1]
			cpu, _ = strconv.Atoi(m[2])
		}
		workload, impl, _ := strings.Cut(name, "/")
		c := cell{workload, impl, cpu}
		if res.samples[c] == nil {
			res.samples[c] = map[string][]float64{}
		}
		if !slices.Contains(res.workloads, workload) {
			res.workloads = append(res.workloads, workload)
		}
		if !slices.Contains(res.impls[workload], impl) {
			res.impls[workload] = append(res.impls[workload], impl)
		}
		if !slices.Contains(res.cpus, cpu) {
			res.cpus = append(res.cpus, cpu)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%q: bad value %q", line, f[i])
			}
			unit := f[i+1]
			res.samples[c][unit] = append(res.samples[c][unit], v)
			if !slices.Contains(res.units[workload], unit) {
				res.units[workload] = append(res.units[workload], unit)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.Ints(res.cpus)
	return res, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// median returns the median of unit in c, and the number of samples.
func (r *results) median(c cell, unit string) (float64, int) {
	xs := r.samples[c][unit]
	return median(xs), len(xs)
}

// ratioUnits get a "× floor" column after their own.
var ratioUnits = map[string]bool{"ns/op": true, "B/entry": true}

// unitOrder puts the standard units first, then custom metrics.
func unitOrder(units []string) []string {
	std := []string{"ns/op", "B/op", "allocs/op"}
	var out []string
	for _, u := range std {
		if slices.Contains(units, u) {
			out = append(out, u)
		}
	}
	for _, u := range units {
		if !slices.Contains(std, u) {
			out = append(out, u)
		}
	}
	return out
}

// formatNum prints v with thousands separators above 1000 and three
// significant digits below.
func formatNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v == 0:
		return "0"
	case math.Abs(v) >= 1000:
		s := strconv.FormatFloat(math.Round(v), 'f', 0, 64)
		neg := strings.HasPrefix(s, "-")
		s = strings.TrimPrefix(s, "-")
		var b strings.Builder
		for i, ch := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(ch)
		}
		if neg {
			return "-" + b.String()
		}
		return b.String()
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func formatRatio(v, floor float64) string {
	if math.IsNaN(v) || math.IsNaN(floor) || floor == 0 {
		return "–"
	}
	return strconv.FormatFloat(v/floor, 'f', 2, 64) + "×"
}

// writeTables prints one markdown table per workload: a row per CPU count
// and implementation, a column per metric (median of the samples), and the
// ratio to the floor for ns/op and B/entry.
func writeTables(w io.Writer, r *results) {
	fmt.Fprintln(w, "# Benchmark medians")
	fmt.Fprintln(w)
	if len(r.header) > 0 {
		fmt.Fprintf(w, "%s\n\n", strings.Join(r.header, ", "))
	}
	fmt.Fprintf(w, "Median of the samples of each cell (n = samples); × floor = ratio to the %q implementation at the same CPU count.\n", floorImpl)
	for _, wl := range r.workloads {
		units := unitOrder(r.units[wl])
		fmt.Fprintf(w, "\n## %s\n\n", wl)
		head := []string{"impl", "CPUs", "n"}
		align := []string{"---", "---:", "---:"}
		for _, u := range units {
			head = append(head, u)
			align = append(align, "---:")
			if ratioUnits[u] {
				head = append(head, "× floor")
				align = append(align, "---:")
			}
		}
		fmt.Fprintf(w, "| %s |\n|%s|\n", strings.Join(head, " | "), strings.Join(align, "|"))
		for _, cpu := range r.cpus {
			for _, im := range r.impls[wl] {
				c := cell{wl, im, cpu}
				if r.samples[c] == nil {
					continue
				}
				_, n := r.median(c, "ns/op")
				row := []string{im, strconv.Itoa(cpu), strconv.Itoa(n)}
				for _, u := range units {
					v, _ := r.median(c, u)
					row = append(row, formatNum(v))
					if ratioUnits[u] {
						fl, _ := r.median(cell{wl, floorImpl, cpu}, u)
						row = append(row, formatRatio(v, fl))
					}
				}
				fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
			}
		}
	}
}

// cpuColors colours the bars of each CPU count.
var cpuColors = []color.Color{
	color.RGBA{0x1f, 0x77, 0xb4, 0xff},
	color.RGBA{0xff, 0x7f, 0x0e, 0xff},
	color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
	color.RGBA{0xd6, 0x27, 0x28, 0xff},
	color.RGBA{0x94, 0x67, 0xbd, 0xff},
	color.RGBA{0x8c, 0x56, 0x4b, 0xff},
}

// scale picks a unit for values up to max of a metric measured in ns or B.
func scale(unit string, max float64) (float64, string) {
	switch unit {
	case "ns/op":
		switch {
		case max >= 1e8:
			return 1e6, "ms/op"
		case max >= 1e5:
			return 1e3, "µs/op"
		}
	}
	return 1, unit
}

// plainTicks are plot.DefaultTicks labelled without needless decimals.
type plainTicks struct{}

func (plainTicks) Ticks(min, max float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'g', 6, 64)
		}
	}
	return ticks
}

// panel is one bar chart: the median of unit for each implementation of a
// workload, a bar per CPU count.
func panel(r *results, wl, unit, title string) (*plot.Plot, error) {
	impls := r.impls[wl]
	max := 0.0
	for _, im := range impls {
		for _, cpu := range r.cpus {
			if v, _ := r.median(cell{wl, im, cpu}, unit); !math.IsNaN(v) {
				max = math.Max(max, v)
			}
		}
	}
	div, yUnit := scale(unit, max)

	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.Y.Label.Text = yUnit + " (median; lower is better)"
	p.Y.Min = 0
	p.Y.Max = max / div * 1.22 // headroom for the legend
	p.Y.Tick.Marker = plainTicks{}
	p.NominalX(impls...)
	p.X.Tick.Label.Rotation = math.Pi / 7
	p.X.Tick.Label.XAlign = draw.XRight
	p.X.Tick.Label.YAlign = draw.YCenter
	p.X.Tick.Label.Font.Size = vg.Points(10)
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	grid := plotter.NewGrid()
	grid.Vertical.Color = nil // lines through the bars only clutter
	p.Add(grid)

	groupWidth := vg.Points(48)
	barWidth := groupWidth / vg.Length(len(r.cpus))
	for i, cpu := range r.cpus {
		vals := make(plotter.Values, len(impls))
		for j, im := range impls {
			v, _ := r.median(cell{wl, im, cpu}, unit)
			if math.IsNaN(v) {
				v = 0
			}
			vals[j] = v / div
		}
		bars, err := plotter.NewBarChart(vals, barWidth)
		if err != nil {
			return nil, err
		}
		bars.Color = cpuColors[i%len(cpuColors)]
		bars.LineStyle.Width = 0
		bars.Offset = barWidth*vg.Length(i) - groupWidth/2 + barWidth/2
		p.Add(bars)
		label := fmt.Sprintf("%d CPU", cpu)
		if cpu != 1 {
			label += "s"
		}
		p.Legend.Add(label, bars)
	}
	return p, nil
}

// writeChart renders a panel per workload (ns/op) and one for B/entry,
// when present, two panels a row, as a PNG.
func writeChart(path string, r *results) error {
	var plots []*plot.Plot
	for _, wl := range r.workloads {
		title := wl + " — ns/op"
		if wl == "Memory" {
			title = wl + " — time to fill 100,000 entries"
		}
		p, err := panel(r, wl, "ns/op", title)
		if err != nil {
			return err
		}
		plots = append(plots, p)
		if slices.Contains(r.units[wl], "B/entry") {
			p, err := panel(r, wl, "B/entry", wl+" — live heap per entry")
			if err != nil {
				return err
			}
			plots = append(plots, p)
		}
	}
	if len(plots) == 0 {
		return fmt.Errorf("no benchmark results to chart")
	}
	const cols = 2
	rows := (len(plots) + cols - 1) / cols
	grid := make([][]*plot.Plot, rows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, p := range plots {
		grid[i/cols][i%cols] = p
	}

	img, dc := benchio.NewCanvas(15*vg.Inch, vg.Length(rows)*4.6*vg.Inch)
	tiles := draw.Tiles{
		Rows: rows, Cols: cols,
		PadTop: vg.Points(10), PadBottom: vg.Points(10),
		PadLeft: vg.Points(10), PadRight: vg.Points(20),
		PadX: vg.Points(30), PadY: vg.Points(25),
	}
	canvases := plot.Align(grid, tiles, dc)
	for i := range grid {
		for j, p := range grid[i] {
			if p != nil {
				p.Draw(canvases[i][j])
			}
		}
	}
	return benchio.WritePNG(path, img)
}

func main() {
	in := flag.String("in", "results.txt", "`file` of go test -bench output (- for standard input)")
	chart := flag.String("chart", "chart.png", "PNG `file` to write the ns/op chart to (empty: none)")
	flag.Parse()

	r, err := benchio.Open(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer r.Close()
	res, err := parse(r)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if len(res.workloads) == 0 {
		fmt.Fprintf(os.Stderr, "no benchmark results in %s\n", *in)
		os.Exit(1)
	}
	writeTables(os.Stdout, res)
	if *chart != "" {
		if err := writeChart(*chart, res); err != nil {
			fmt.Fprintln(os.Stderr, "chart:", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", *chart)
	}
}
