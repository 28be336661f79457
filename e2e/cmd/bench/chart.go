package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"strings"
)

// chartPNG draws the throughput of each data-plane scenario as a bar (the
// median) with a whisker (min to max), its value above and its name below,
// over a labelled grid. Standard library only: text is drawn with the tiny
// 5x7 font below, scaled 2x.
func chartPNG(rep Report) ([]byte, error) {
	var rs []Result
	for _, r := range rep.Results {
		if r.Error == "" && len(r.Runs) > 0 {
			rs = append(rs, r)
		}
	}
	const W, H, left, right, top, bottom = 900, 460, 80, 20, 60, 70
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	fill(img, img.Bounds(), color.RGBA{255, 255, 255, 255})
	ink := color.RGBA{40, 40, 40, 255}
	grid := color.RGBA{220, 220, 220, 255}
	text(img, left, 16, 2, ink, fmt.Sprintf("POD-TO-POD TCP THROUGHPUT, GBIT/S (MEDIAN OF %d, MIN-MAX)", rep.Runs))
	text(img, left, 38, 1, ink, strings.ToUpper(fmt.Sprintf("%s, KERNEL %s, %d CPUS, IPERF3 %s RUNS", rep.Time.Format("2006-01-02 15:04"), rep.Kernel, rep.CPUs, rep.Duration)))
	if len(rs) == 0 {
		text(img, left, H/2, 2, ink, "NO RESULTS")
		return encode(img)
	}
	top1 := 0.0
	for _, r := range rs {
		top1 = max(top1, r.Gbps.Max)
	}
	step := niceStep(top1 / 5)
	ymax := step * math.Ceil(top1/step)
	if ymax == 0 {
		ymax = 1
	}
	plotH := H - top - bottom
	y := func(v float64) int { return H - bottom - int(v/ymax*float64(plotH)) }
	for v := 0.0; v <= ymax+step/2; v += step {
		fill(img, image.Rect(left, y(v), W-right, y(v)+1), grid)
		lbl := trimFloat(v)
		text(img, left-8-len(lbl)*12, y(v)-7, 2, ink, lbl)
	}
	fill(img, image.Rect(left, top, left+1, H-bottom), ink)
	palette := []color.RGBA{{120, 120, 120, 255}, {46, 134, 193, 255}, {39, 174, 96, 255}, {230, 126, 34, 255}, {192, 57, 43, 255}, {142, 68, 173, 255}}
	slot := (W - left - right) / len(rs)
	bw := min(slot*6/10, 120)
	for i, r := range rs {
		x0 := left + slot*i + (slot-bw)/2
		fill(img, image.Rect(x0, y(r.Gbps.Median), x0+bw, H-bottom), palette[i%len(palette)])
		cx := x0 + bw/2
		fill(img, image.Rect(cx-1, y(r.Gbps.Max), cx+1, y(r.Gbps.Min)+1), ink)
		fill(img, image.Rect(cx-8, y(r.Gbps.Max), cx+8, y(r.Gbps.Max)+2), ink)
		fill(img, image.Rect(cx-8, y(r.Gbps.Min)-1, cx+8, y(r.Gbps.Min)+1), ink)
		val := fmt.Sprintf("%.2f", r.Gbps.Median)
		if r.VsUnderlay > 0 {
			val += fmt.Sprintf(" (%.0f%%)", r.VsUnderlay*100)
		}
		text(img, cx-len(val)*6, y(r.Gbps.Max)-20, 2, ink, val)
		name := strings.ToUpper(r.Name)
		sc := 2
		if len(name)*12 > slot-4 {
			sc = 1
		}
		text(img, cx-len(name)*3*sc, H-bottom+12, sc, ink, name)
	}
	text(img, left, H-22, 1, ink, "PERCENT: RATIO TO THE UNDERLAY (HOST TO HOST) IN THE SAME RUN")
	return encode(img)
}

func encode(img image.Image) ([]byte, error) {
	var b bytes.Buffer
	err := png.Encode(&b, img)
	return b.Bytes(), err
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// text draws s with its top-left corner at (x, y), each font pixel a
// scale x scale square. Characters without a glyph are drawn as spaces.
func text(img *image.RGBA, x, y, scale int, c color.RGBA, s string) {
	for _, ch := range s {
		cols := font5x7[ch]
		for cx, col := range cols {
			for row := range 7 {
				if col&(1<<row) != 0 {
					fill(img, image.Rect(x+cx*scale, y+row*scale, x+(cx+1)*scale, y+(row+1)*scale), c)
				}
			}
		}
		x += 6 * scale
	}
}

// font5x7 is the classic 5x7 LCD font: five columns per glyph, bit 0 the
// top row.
var font5x7 = map[rune][5]byte{
	'0': {0x3E, 0x51, 0x49, 0x45, 0x3E}, '1': {0x00, 0x42, 0x7F, 0x40, 0x00},
	'2': {0x42, 0x61, 0x51, 0x49, 0x46}, '3': {0x21, 0x41, 0x45, 0x4B, 0x31},
	'4': {0x18, 0x14, 0x12, 0x7F, 0x10}, '5': {0x27, 0x45, 0x45, 0x45, 0x39},
	'6': {0x3C, 0x4A, 0x49, 0x49, 0x30}, '7': {0x01, 0x71, 0x09, 0x05, 0x03},
	'8': {0x36, 0x49, 0x49, 0x49, 0x36}, '9': {0x06, 0x49, 0x49, 0x29, 0x1E},
	'A': {0x7E, 0x11, 0x11, 0x11, 0x7E}, 'B': {0x7F, 0x49, 0x49, 0x49, 0x36},
	'C': {0x3E, 0x41, 0x41, 0x41, 0x22}, 'D': {0x7F, 0x41, 0x41, 0x22, 0x1C},
	'E': {0x7F, 0x49, 0x49, 0x49, 0x41}, 'F': {0x7F, 0x09, 0x09, 0x09, 0x01},
	'G': {0x3E, 0x41, 0x49, 0x49, 0x7A}, 'H': {0x7F, 0x08, 0x08, 0x08, 0x7F},
	'I': {0x00, 0x41, 0x7F, 0x41, 0x00}, 'J': {0x20, 0x40, 0x41, 0x3F, 0x01},
	'K': {0x7F, 0x08, 0x14, 0x22, 0x41}, 'L': {0x7F, 0x40, 0x40, 0x40, 0x40},
	'M': {0x7F, 0x02, 0x0C, 0x02, 0x7F}, 'N': {0x7F, 0x04, 0x08, 0x10, 0x7F},
	'O': {0x3E, 0x41, 0x41, 0x41, 0x3E}, 'P': {0x7F, 0x09, 0x09, 0x09, 0x06},
	'Q': {0x3E, 0x41, 0x51, 0x21, 0x5E}, 'R': {0x7F, 0x09, 0x19, 0x29, 0x46},
	'S': {0x46, 0x49, 0x49, 0x49, 0x31}, 'T': {0x01, 0x01, 0x7F, 0x01, 0x01},
	'U': {0x3F, 0x40, 0x40, 0x40, 0x3F}, 'V': {0x1F, 0x20, 0x40, 0x20, 0x1F},
	'W': {0x3F, 0x40, 0x38, 0x40, 0x3F}, 'X': {0x63, 0x14, 0x08, 0x14, 0x63},
	'Y': {0x07, 0x08, 0x70, 0x08, 0x07}, 'Z': {0x61, 0x51, 0x49, 0x45, 0x43},
	'.': {0x00, 0x60, 0x60, 0x00, 0x00}, '-': {0x08, 0x08, 0x08, 0x08, 0x08},
	'/': {0x20, 0x10, 0x08, 0x04, 0x02}, '%': {0x23, 0x13, 0x08, 0x64, 0x62},
	'(': {0x00, 0x1C, 0x22, 0x41, 0x00}, ')': {0x00, 0x41, 0x22, 0x1C, 0x00},
	':': {0x00, 0x36, 0x36, 0x00, 0x00}, ',': {0x00, 0x50, 0x30, 0x00, 0x00},
	'[': {0x00, 0x7F, 0x41, 0x41, 0x00}, ']': {0x00, 0x41, 0x41, 0x7F, 0x00},
	'=': {0x14, 0x14, 0x14, 0x14, 0x14}, '+': {0x08, 0x08, 0x3E, 0x08, 0x08},
	'_': {0x40, 0x40, 0x40, 0x40, 0x40},
}
