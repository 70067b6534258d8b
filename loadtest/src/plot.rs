//! The latency plot, as SVG: the percentile spectrum of every operation (top) and p50/p99 per
//! second over the run (bottom).
//!
//! The spectrum's x axis is `log10(1 / (1 - percentile))`, so 90%, 99%, 99.9% and 99.99% are
//! equally spaced: the tail, where a sale goes wrong, gets as much room as the median.

use std::path::Path;

use plotters::prelude::*;

use crate::summary::{LoadSummary, SpectrumPoint};

fn x_of(percentile: f64, x_max: f64) -> f64 {
    let rest = 1.0 - percentile / 100.0;
    if rest <= 0.0 {
        x_max
    } else {
        (1.0 / rest).log10().min(x_max)
    }
}

fn format_ms(ms: f64) -> String {
    if ms >= 100.0 || ms == 0.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.ceil() as usize).saturating_sub(2);
    format!("{p:.decimals$}%")
}

/// Draws the latencies of `scenario`'s measured phase `load` into an SVG file at `path`.
pub fn write_svg(path: &Path, scenario: &str, load: &LoadSummary) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // The spectrum ends at the maximum: one step past the resolution the sample count gives.
    let x_max = ((load.all.count.max(10) as f64).log10() + 0.5).ceil();
    let mut series: Vec<(String, &Vec<SpectrumPoint>)> =
        load.ops.iter().map(|(op, s)| (op.clone(), &s.spectrum)).collect();
    if load.ops.len() > 1 {
        series.push(("all".to_string(), &load.all.spectrum));
    }
    let y_max = (load.all.latency_ms.max * 1.05).max(1.0);

    let root = SVGBackend::new(path, (1100, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(560);
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "{} — latency by percentile ({}, {} attempts, {:.0}/s)",
                scenario, load.arrival, load.all.count, load.throughput_per_s
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .margin_right(40)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| format_ms(*y))
        .x_desc("percentile (log scale towards 100%)")
        .y_desc("latency ms (from the scheduled send)")
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (x_of(p.percentile, x_max), p.latency_ms)),
                color.stroke_width(2),
            ))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let t_max = load
        .timeline
        .last()
        .map_or(1.0, |p| p.t_s)
        .max(load.elapsed_s)
        .max(1.0);
    let y2_max = load.timeline.iter().map(|p| p.p99_ms).fold(1.0, f64::max) * 1.1;
    let mut timeline = ChartBuilder::on(&bottom)
        .caption("p50 and p99 per second", ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..y2_max)?;
    timeline
        .configure_mesh()
        .y_label_formatter(&|y| format_ms(*y))
        .x_desc("seconds since start")
        .y_desc("latency ms")
        .draw()?;
    for (name, color, pick) in [
        (
            "p50",
            BLUE,
            (|p: &crate::engine::TimelinePoint| p.p50_ms) as fn(&_) -> f64,
        ),
        ("p99", RED, |p: &crate::engine::TimelinePoint| p.p99_ms),
    ] {
        timeline
            .draw_series(LineSeries::new(
                load.timeline.iter().map(|p| (p.t_s, pick(p))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    timeline
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_spaces_nines_evenly() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(4.0), "99.99%");
        assert!((x_of(99.0, 5.0) - 2.0).abs() < 1e-9);
        assert_eq!(x_of(100.0, 5.0), 5.0);
    }
}
