//! Shell completion (`clap_complete`) and man pages (`clap_mangen`) for vnicd's binaries, made
//! from the same `clap` definitions the binaries parse with, so they never drift.
//!
//! Every binary calls [`generate`] first: `BIN --generate-completions SHELL` prints the
//! completion script for SHELL, `BIN --generate-man` the man page (roff), and exits. The two
//! options are not part of the binary's own command line (they stay out of `--help` and of the
//! man page); `make deb` uses them to stage the package.
#![forbid(unsafe_code)]
use clap::CommandFactory;
use std::io::Write;
use std::process::ExitCode;

/// The man section a binary's page goes in: 8 for the daemon, 1 for the rest.
pub fn man_section(bin: &str) -> &'static str {
    if bin == "vnicd" {
        "8"
    } else {
        "1"
    }
}

/// Handle `--generate-completions SHELL` / `--generate-man` for the binary whose arguments are
/// `A`; `None` when the command line asks for neither (parse it as usual then).
pub fn generate<A: CommandFactory>(bin: &'static str) -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cmd = A::command().name(bin).bin_name(bin);
    let out = &mut std::io::stdout();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--generate-completions", shell] => {
            let Ok(sh) = shell.parse::<clap_complete::Shell>() else {
                eprintln!(
                    "{bin}: --generate-completions: unknown shell {shell:?} (bash, zsh, fish, elvish, powershell)"
                );
                return Some(ExitCode::from(2));
            };
            clap_complete::generate(sh, &mut cmd, bin, out);
            Some(ExitCode::SUCCESS)
        }
        ["--generate-man"] => {
            let man = clap_mangen::Man::new(cmd).section(man_section(bin));
            match man.render(out).and_then(|()| out.flush()) {
                Ok(()) => Some(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("{bin}: --generate-man: {e}");
                    Some(ExitCode::FAILURE)
                }
            }
        }
        _ => None,
    }
}
