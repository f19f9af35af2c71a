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
        for (lo, hi, ch, fmt) in d.configs {
            let rate = if lo == hi {
                format!("{lo} Hz")
            } else {
                format!("{lo}-{hi} Hz")
            };
            println!("      {rate}, {ch} ch, {fmt}");
        }
    }
    Ok(())
}
