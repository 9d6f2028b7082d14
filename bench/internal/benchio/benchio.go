// Package benchio holds what the bench module's commands share: opening
// their input and drawing and writing their charts.
package benchio

import (
	"image/color"
	"io"
	"os"

	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Open opens the named file, or returns standard input for "-".
func Open(name string) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(os.Stdin), nil
	}
	return os.Open(name)
}

// NewCanvas returns an image of w by h at 96 dots per inch, painted white
// (a transparent PNG is unreadable in dark viewers), and a canvas to draw
// on it.
func NewCanvas(w, h vg.Length) (*vgimg.Canvas, draw.Canvas) {
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(96))
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	return img, dc
}

// WritePNG writes img to the file path as a PNG.
func WritePNG(path string, img *vgimg.Canvas) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
