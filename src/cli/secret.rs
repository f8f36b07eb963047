//! Flags that may hold a secret (database and Redis URLs, the admin token): a value that
//! does not parse is described, never echoed. clap's own "invalid value '…'" message
//! would print the whole value, password included.

use std::ffi::OsStr;
use std::marker::PhantomData;
use std::str::FromStr;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

#[derive(Clone)]
pub struct SecretParser<T>(PhantomData<fn() -> T>);

pub fn parser<T>() -> SecretParser<T> {
    SecretParser(PhantomData)
}

impl<T> TypedValueParser for SecretParser<T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let name = match arg {
            Some(arg) => match (arg.get_long(), arg.get_env()) {
                (Some(long), Some(env)) => format!("--{long} ({})", env.to_string_lossy()),
                (Some(long), None) => format!("--{long}"),
                _ => arg.get_id().to_string(),
            },
            None => "a value".to_owned(),
        };
        let refuse = |rule: &str| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid {name}: {rule}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value.to_str().ok_or_else(|| refuse("is not valid UTF-8"))?;
        text.parse::<T>().map_err(|rule| refuse(&rule))
    }
}
