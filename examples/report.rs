//! The roofline report: every available path × dtype × size × threads, against an independent memory ceiling
//! measured in the same run (`adagrad-ceiling`: the best of several same-traffic loops that share no code with the
//! update; the winning variant is printed and stored per row).
//!
//! `cargo run --release --example report [-- --quick] [--json PATH] [--svg PATH]`
//!
//! Formats: f32, f64, and the CPU-offload step (f32 parameters and state with bf16 gradients, 18 bytes per
//! element, and with a bf16 copy-out, 20). For each row: ns per element, GB/s (bytes moved per element: read
//! //! param, grad, state; write param, state; write the copy-out), percent of the ceiling (same size, same threads,
//! same run), and speedup against the portable path. Times are medians of several samples. An SVG plot (GB/s
//! against size, one line per path, the ceiling dashed) is written to `target/report.svg` unless `--svg` says
//! otherwise.

use adagrad::{
    Adagrad, AlignedBuf, Config, CopyOut, Float, Grad, Isa, NoCopy, Parallelism, Precision, bf16,
};
use adagrad_ceiling::{Ceiling, Format, cpu_name, median_secs};
use plotters::prelude::*;
use std::io::{IsTerminal, Write};

const SIZES: [usize; 5] = [1024, 4096, 65536, 1 << 20, 1 << 24];
const QUICK_SIZES: [usize; 4] = [1024, 4096, 65536, 1 << 20];

/// One measured row.
#[derive(Clone, Debug)]
struct Row {
    dtype: &'static str,
    size: usize,
    threads: usize,
    path: String,
    ns_per_elem: f64,
    gbps: f64,
    pct_stream: f64,
    vs_portable: f64,
}

struct Opts {
    quick: bool,
    json: Option<String>,
    svg: String,
}

fn opts() -> Result<Opts, String> {
    let mut o = Opts {
        quick: false,
        json: None,
        svg: "target/report.svg".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--json" => o.json = Some(args.next().ok_or("--json needs a path")?),
            "--svg" => o.svg = args.next().ok_or("--svg needs a path")?,
            "-h" | "--help" => {
                println!("usage: report [--quick] [--json PATH] [--svg PATH]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(o)
}

/// The paths to measure: (label, isa, precision). Fast only where it differs from Exact.
fn paths() -> Vec<(String, Isa, Precision)> {
    let mut v = Vec::new();
    for isa in Isa::available() {
        match isa {
            Isa::Scalar => v.push(("reference".to_string(), isa, Precision::Exact)),
            _ => {
                v.push((format!("{isa}-exact"), isa, Precision::Exact));
                v.push((format!("{isa}-fast"), isa, Precision::Fast));
            }
        }
    }
    v
}

fn parallelism(threads: usize) -> Parallelism {
    if threads == 1 {
        Parallelism::Sequential
    } else {
        Parallelism::Threads(threads)
    }
}

/// Measures one format (parameter type `T`, gradients `G`, copy-out `O`) over every path, size and thread count.
fn measure<T: Float, G: Grad<T>, O: CopyOut<T>>(
    label: &'static str,
    format: Format,
    o: &Opts,
    threads_list: &[usize],
    rows: &mut Vec<Row>,
    progress: &mut dyn FnMut(&str),
) {
    let sizes: &[usize] = if o.quick { &QUICK_SIZES } else { &SIZES };
    let (samples, min_sample) = if o.quick { (5, 0.002) } else { (11, 0.01) };
    let copy = O::KIND != 0;
    let bytes = 4 * size_of::<T>() + size_of::<G>() + if copy { size_of::<O>() } else { 0 };
    for &n in sizes {
        let p0: Vec<T> = (0..n)
            .map(|i| T::from_f64(0.5 + (i % 13) as f64 * 0.01))
            .collect();
        let g: Vec<G> = (0..n)
            .map(|i| G::round_from(T::from_f64((i % 97) as f64 * 1e-3 - 0.048)))
            .collect();
        // The crate's aligned buffers (huge pages from 2 MiB) for parameters and gradients, as the README
        // recommends; the ceiling takes the better of plain and aligned buffers.
        let g = AlignedBuf::from_slice(&g).expect("memory");
        let mut out: Vec<O> = if copy {
            vec![O::ZERO_VALUE; n]
        } else {
            Vec::new()
        };
        for &threads in threads_list {
            let par = parallelism(threads);
            // The independent ceiling: same traffic, its own loops, buffers and threads. First every variant, to
            // find the fastest; then that one is timed again in the same rounds as the paths, interleaved.
            progress(&format!("{label} n={n} threads={threads}: ceiling"));
            let ceiling = Ceiling::new(format, n, threads);
            // The three fastest variants of a first pass are timed in every round; the round's ceiling is the
            // fastest of them (a single pick from a short first pass can be unlucky on a shared machine).
            let mut first = ceiling.measure(3, min_sample).all;
            first.sort_by(|a, b| a.1.total_cmp(&b.1));
            let top: Vec<String> = first.iter().take(3).map(|(n, _)| n.clone()).collect();
            let mut passes: Vec<(String, Box<dyn FnMut() + '_>)> = ceiling
                .passes()
                .into_iter()
                .filter(|(name, _)| top.contains(name))
                .collect();
            let mut wins = vec![0usize; passes.len()];
            let mut opts: Vec<(String, Adagrad<T>, AlignedBuf<T>)> = paths()
                .into_iter()
                .map(|(path, isa, pr)| {
                    let config = Config::default()
                        .isa(isa)
                        .precision(pr)
                        .parallelism(par.clone());
                    let opt = Adagrad::<T>::new(config, &[n]).expect("available path");
                    (path, opt, AlignedBuf::from_slice(&p0).expect("memory"))
                })
                .collect();
            let mut times: Vec<Vec<f64>> = vec![Vec::new(); opts.len() + 1];
            let mut pct: Vec<Vec<f64>> = vec![Vec::new(); opts.len()];
            for round in 0..samples {
                progress(&format!(
                    "{label} n={n} threads={threads}: round {}/{samples}",
                    round + 1
                ));
                let tcs: Vec<f64> = passes
                    .iter_mut()
                    .map(|(_, f)| median_secs(&mut **f, 1, min_sample))
                    .collect();
                let (w, tc) = tcs
                    .iter()
                    .copied()
                    .enumerate()
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .expect("three variants");
                wins[w] += 1;
                times[opts.len()].push(tc);
                for (i, (_, opt, p)) in opts.iter_mut().enumerate() {
                    let mut step = || {
                        let outs: Option<&mut [&mut [O]]> = None;
                        match copy {
                            true => {
                                opt.step_with(&mut [&mut p[..]], &[&g], Some(&mut [&mut out]), None)
                            }
                            false => opt.step_with(&mut [&mut p[..]], &[&g], outs, None),
                        }
                        .unwrap();
                    };
                    let t = median_secs(&mut step, 1, min_sample);
                    times[i].push(t);
                    pct[i].push(100.0 * tc / t);
                }
            }
            let med = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let t_stream = med(times[opts.len()].clone());
            let best = passes
                .iter()
                .zip(&wins)
                .max_by_key(|(_, w)| **w)
                .map(|((n, _), _)| n.clone())
                .unwrap_or_default();
            let measured: Vec<(String, f64, f64)> = opts
                .iter()
                .enumerate()
                .map(|(i, (path, _, _))| (path.clone(), med(times[i].clone()), med(pct[i].clone())))
                .collect();
            let t_portable = measured
                .iter()
                .find(|(l, _, _)| l == "portable-exact")
                .map(|&(_, t, _)| t)
                .unwrap_or(f64::NAN);
            for (path, t, pct) in
                measured
                    .into_iter()
                    .chain([(format!("ceiling ({best})"), t_stream, 100.0)])
            {
                rows.push(Row {
                    dtype: label,
                    size: n,
                    threads,
                    path,
                    ns_per_elem: t * 1e9 / n as f64,
                    gbps: (bytes * n) as f64 / t / 1e9,
                    pct_stream: pct,
                    vs_portable: t_portable / t,
                });
            }
        }
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<13} {:>9} {:>3}  {:<16} {:>9} {:>8} {:>9} {:>9}",
        "format", "size", "thr", "path", "ns/elem", "GB/s", "%ceiling", "×portable"
    );
    let mut last = ("", 0, 0);
    for r in rows {
        if (r.dtype, r.size, r.threads) != last && last.1 != 0 {
            println!();
        }
        last = (r.dtype, r.size, r.threads);
        println!(
            "{:<13} {:>9} {:>3}  {:<16} {:>9.3} {:>8.1} {:>8.0}% {:>9.2}",
            r.dtype, r.size, r.threads, r.path, r.ns_per_elem, r.gbps, r.pct_stream, r.vs_portable
        );
    }
}

fn write_json(path: &str, cpu: &str, rows: &[Row]) -> std::io::Result<()> {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "dtype": r.dtype, "size": r.size, "threads": r.threads, "path": r.path,
                "ns_per_elem": r.ns_per_elem, "gb_per_s": r.gbps, "pct_of_ceiling": r.pct_stream,
                "speedup_vs_portable": r.vs_portable,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "schema": "adagrad-report/v2",
        "cpu": cpu,
        "best_path": Isa::best().name(),
        "default_path": Adagrad::<f32>::new(Config::default(), &[0]).map(|o| o.isa().name()).unwrap_or("?"),
        "tuning": Adagrad::<f32>::new(Config::default(), &[0]).map(|o| o.tuning().to_string()).unwrap_or_default(),
        "bytes_per_element": {"f32": 20, "f64": 40, "f32+bf16g": 18, "f32+bf16g+out": 20},
        "rows": rows,
    });
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)
}

/// GB/s against size (log scale), one panel per (dtype, threads), one line per path, the ceiling dashed.
fn write_svg(
    path: &str,
    rows: &[Row],
    threads_list: &[usize],
) -> Result<(), Box<dyn std::error::Error>> {
    let panels: Vec<(&str, usize)> = ["f32", "f64"]
        .into_iter()
        .flat_map(|d| threads_list.iter().map(move |&t| (d, t)))
        .collect();
    let root = SVGBackend::new(path, (560 * threads_list.len() as u32, 840)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((2, threads_list.len()));
    for ((dtype, threads), area) in panels.into_iter().zip(areas) {
        let sel: Vec<&Row> = rows
            .iter()
            .filter(|r| r.dtype == dtype && r.threads == threads)
            .collect();
        if sel.is_empty() {
            continue;
        }
        let (xmin, xmax) = sel.iter().fold((f64::MAX, 0.0f64), |a, r| {
            (a.0.min(r.size as f64), a.1.max(r.size as f64))
        });
        let ymax = sel.iter().map(|r| r.gbps).fold(0.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&area)
            .caption(format!("{dtype}, {threads} thread(s)"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d((xmin..xmax).log_scale(), 0.0..ymax)?;
        chart
            .configure_mesh()
            .x_desc("elements")
            .y_desc("GB/s")
            .draw()?;
        let mut labels: Vec<&str> = sel.iter().map(|r| r.path.as_str()).collect();
        labels.dedup();
        labels.sort();
        labels.dedup();
        for (i, label) in labels.iter().enumerate() {
            let pts: Vec<(f64, f64)> = sel
                .iter()
                .filter(|r| r.path == *label)
                .map(|r| (r.size as f64, r.gbps))
                .collect();
            let color = Palette99::pick(i).to_rgba();
            let is_stream = label.starts_with("ceiling");
            let style = if is_stream {
                BLACK.stroke_width(3)
            } else {
                color.stroke_width(2)
            };
            chart
                .draw_series(LineSeries::new(pts, style))?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn main() {
    let o = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("report: {e}");
            std::process::exit(2);
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads_list: Vec<usize> = if cores > 1 { vec![1, cores] } else { vec![1] };
    let cpu = cpu_name();
    println!("CPU: {cpu} ({cores} threads)");
    println!(
        "paths available: {}; best: {}",
        Isa::available()
            .map(Isa::name)
            .collect::<Vec<_>>()
            .join(", "),
        Isa::best()
    );
    println!(
        "bytes per element: f32 20, f64 40, f32+bf16g 18, f32+bf16g+out 20; \
         ceiling = best of independent same-traffic loops (adagrad-ceiling)"
    );
    if let Ok(opt) = Adagrad::<f32>::new(Config::default(), &[0]) {
        println!(
            "tuning: {} ({}); threads per parallel step: {}",
            opt.tuning(),
            adagrad::Cpu::this(),
            opt.threads()
        );
    }
    let mut rows = Vec::new();
    // Progress goes to a terminal only, on one line rewritten in place; redirected, the output holds the results
    // alone.
    let terminal = std::io::stderr().is_terminal();
    let mut progress = |what: &str| {
        if terminal {
            eprint!("\r\x1b[2Kmeasuring {what}");
            let _ = std::io::stderr().flush();
        }
    };
    measure::<f32, f32, NoCopy>(
        "f32",
        Format::F32,
        &o,
        &threads_list,
        &mut rows,
        &mut progress,
    );
    measure::<f64, f64, NoCopy>(
        "f64",
        Format::F64,
        &o,
        &threads_list,
        &mut rows,
        &mut progress,
    );
    // The CPU-offload step: f32 master weights and state, bf16 gradients, with and without a bf16 copy-out.
    measure::<f32, bf16, NoCopy>(
        "f32+bf16g",
        Format::F32Bf16,
        &o,
        &threads_list,
        &mut rows,
        &mut progress,
    );
    measure::<f32, bf16, bf16>(
        "f32+bf16g+out",
        Format::F32Bf16Out,
        &o,
        &threads_list,
        &mut rows,
        &mut progress,
    );
    if terminal {
        eprintln!("\r\x1b[2Kdone");
    }
    print_table(&rows);
    if let Some(path) = &o.json {
        match write_json(path, &cpu, &rows) {
            Ok(()) => println!("\nJSON: {path}"),
            Err(e) => eprintln!("report: cannot write {path}: {e}"),
        }
    }
    match write_svg(&o.svg, &rows, &threads_list) {
        Ok(()) => println!("SVG: {}", o.svg),
        Err(e) => eprintln!("report: cannot write {}: {e}", o.svg),
    }
}
