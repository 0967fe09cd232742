package main

import (
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// nines maps a percentile (a fraction) to the x axis of a latency
// percentile plot: log10(1/(1-p)), so 90% is 1, 99% is 2, 99.9% is 3.
func nines(p float64) float64 { return math.Log10(1 / (1 - p)) }

type ninesTicks struct{}

func (ninesTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for _, t := range []struct {
		p     float64
		label string
	}{{0, "0%"}, {0.5, "50%"}, {0.9, "90%"}, {0.99, "99%"}, {0.999, "99.9%"}, {0.9999, "99.99%"}, {0.99999, "99.999%"}} {
		if x := nines(t.p); x >= lo-1e-9 && x <= hi+1e-9 {
			ts = append(ts, plot.Tick{Value: x, Label: t.label})
		}
	}
	return ts
}

// colours per target, so that a path keeps its colour from plot to plot.
var colours = map[string]color.Color{
	"direct":     color.RGBA{0x55, 0x55, 0x55, 0xff},
	"tokenproxy": color.RGBA{0xd6, 0x27, 0x28, 0xff},
	"nginx":      color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
	"haproxy":    color.RGBA{0x1f, 0x77, 0xb4, 0xff},
	"caddy":      color.RGBA{0xff, 0x7f, 0x0e, 0xff},
}

// plotLatency draws each target's latency by percentile on a log latency
// axis, one line per open-loop run in the target's colour (so that the
// spread between runs shows: on a shared machine a stall lifts one run's
// tail), and saves it as a PNG.
func (r *results) plotLatency(path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Latency by percentile, open loop at %s req/s, %s bodies: one line per run", thousands(rate(r)), sizeLabel(r.Sizes[0]))
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (ms)"
	p.X.Tick.Marker = ninesTicks{}
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	for i, t := range r.Targets {
		for run, pts := range r.HDR[t] {
			var xy plotter.XYs
			for _, pt := range pts {
				// Past 99.99% a row is one of the last few requests (the max
				// is in the table); a latency of 0 has no place on a log axis.
				if pt.Percentile > 0.9999 || pt.Ms <= 0 {
					continue
				}
				xy = append(xy, plotter.XY{X: nines(pt.Percentile), Y: pt.Ms})
			}
			if len(xy) == 0 {
				continue
			}
			line, err := plotter.NewLine(xy)
			if err != nil {
				return fmt.Errorf("%s: %w", t, err)
			}
			line.Color = colours[t]
			if line.Color == nil {
				line.Color = color.Gray{uint8(40 * i)}
			}
			line.Width = vg.Points(1.2)
			if t == "direct" {
				line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			}
			p.Add(line)
			if run == 0 {
				p.Legend.Add(label(t, r.Env), line)
			}
		}
	}
	p.Legend.ThumbnailWidth = vg.Points(20)
	p.Legend.Padding = vg.Points(2)
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(8), -vg.Points(8)
	return p.Save(9*vg.Inch, 5*vg.Inch, path)
}
