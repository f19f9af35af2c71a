//! `ajepa devices`: the input devices with their native rates, channels and formats.

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let devices = audio_jepa::stream::capture::list_devices()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&devices)?);
        return Ok(());
    }
    if devices.is_empty() {
        println!(
            "no input devices found (on Linux: is ALSA installed and a capture device present?)"
        );
        return Ok(());
    }
    for d in devices {
        let default = if d.is_default { " (default)" } else { "" };
        let cfg = d
            .default_config
            .as_ref()
            .map(|(r, c, f)| format!("{r} Hz, {c} ch, {f}"))
            .unwrap_or_else(|| "no default configuration".into());
        println!("{}{default}: {cfg}", d.label());
        for line in summarize(&d.configs) {
            println!("      {line}");
        }
    }
    Ok(())
}

/// Supported configurations, one line per rate range and channel set with the sample formats
/// that share them: ALSA offers every format at 1 to 64 channels (over 800 configurations for
/// its `null` device), which one line per configuration buries.
fn summarize(configs: &[(u32, u32, u16, String)]) -> Vec<String> {
    use std::collections::BTreeMap;
    // (rates) -> format -> channels
    let mut by_rate: BTreeMap<(u32, u32), BTreeMap<&str, Vec<u16>>> = BTreeMap::new();
    for (lo, hi, ch, fmt) in configs {
        by_rate
            .entry((*lo, *hi))
            .or_default()
            .entry(fmt.as_str())
            .or_default()
            .push(*ch);
    }
    let mut lines = Vec::new();
    for ((lo, hi), formats) in by_rate {
        let rate = if lo == hi {
            format!("{lo} Hz")
        } else {
            format!("{lo}-{hi} Hz")
        };
        // channels -> formats, in the order formats were first seen per channel set.
        let mut by_channels: Vec<(String, Vec<&str>)> = Vec::new();
        for (fmt, mut chans) in formats {
            chans.sort_unstable();
            chans.dedup();
            let key = ranges(&chans);
            match by_channels.iter_mut().find(|(k, _)| *k == key) {
                Some((_, f)) => f.push(fmt),
                None => by_channels.push((key, vec![fmt])),
            }
        }
        for (chans, fmts) in by_channels {
            lines.push(format!("{rate}, {chans} ch: {}", fmts.join(" ")));
        }
    }
    lines
}

/// `1-8, 10` for sorted, distinct channel counts.
fn ranges(v: &[u16]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::summarize;

    #[test]
    fn configurations_are_grouped_by_rates_and_channels() {
        let mut configs = Vec::new();
        for fmt in ["i16", "f32"] {
            for ch in 1..=64u16 {
                configs.push((1, u32::MAX, ch, fmt.to_string()));
            }
        }
        configs.push((48_000, 48_000, 2, "i16".to_string()));
        configs.push((48_000, 48_000, 1, "i16".to_string()));
        configs.push((48_000, 48_000, 4, "i16".to_string()));
        configs.push((48_000, 48_000, 2, "i24".to_string()));
        assert_eq!(
            summarize(&configs),
            [
                "1-4294967295 Hz, 1-64 ch: f32 i16",
                "48000 Hz, 1-2, 4 ch: i16",
                "48000 Hz, 2 ch: i24",
            ]
        );
        assert!(summarize(&[]).is_empty());
    }
}
