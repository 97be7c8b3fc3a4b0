//! A table's `where`: SQL by design, but exactly one expression in its source's dialect.
//!
//! sluice splices the filter into its own queries as `WHERE (<where>) AND <window> AND
//! <chunk range>`. A text that is not one whole expression could close sluice's parenthesis
//! (`1=1) or (1=1` turns the chunk range into an alternative and every chunk reads the whole
//! table), end the statement (`;`), or comment out what follows (`--`, `/*`, MySQL's `#`).
//! So the filter is tokenized and parsed with the source's own dialect (the `sqlparser`
//! crate) and must be exactly one expression, consuming every token, with no comment and no
//! `;` among them.

use sqlparser::dialect::{Dialect, GenericDialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use crate::config::Engine;

/// Checks that `filter` is exactly one SQL expression in the dialect of `engine` (generic SQL
/// when the source is unknown). The message says what is wrong, for the field `where`.
pub fn check_filter(filter: &str, engine: Option<Engine>) -> Result<(), String> {
    let dialect: Box<dyn Dialect> = match engine {
        Some(Engine::Postgres) => Box::new(PostgreSqlDialect {}),
        Some(Engine::Mysql) => Box::new(MySqlDialect {}),
        None => Box::new(GenericDialect {}),
    };
    let tokens = Tokenizer::new(dialect.as_ref(), filter)
        .tokenize()
        .map_err(|e| format!("is not valid SQL: {e}"))?;
    for token in &tokens {
        match token {
            Token::Whitespace(Whitespace::SingleLineComment { .. })
            | Token::Whitespace(Whitespace::MultiLineComment(_)) => {
                return Err(
                    "must not contain SQL comments ('--', '/*', '*/', or MySQL's '#')".into(),
                );
            }
            Token::SemiColon => {
                return Err("must not contain ';' (one boolean expression only)".into());
            }
            _ => {}
        }
    }
    let mut parser = Parser::new(dialect.as_ref()).with_tokens(tokens);
    let expr = parser
        .parse_expr()
        .map_err(|e| format!("is not one SQL expression: {e}"))?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(format!(
            "must be exactly one boolean expression, but '{}' follows '{expr}': a parenthesis closed that was never opened, or a clause such as ORDER BY or LIMIT, is not allowed",
            next.token
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_expression_in_the_sources_dialect_is_accepted() {
        for filter in [
            "status <> 'cancelled'",
            "ordered_at >= DATE '2024-01-01' AND (total > 10 OR currency IN ('EUR', 'USD'))",
            "customer_id IN (SELECT id FROM public.vip)",
            "name ILIKE 'a%' AND tags @> ARRAY['x']",
            "note = 'it''s ) or ( 1=1'",
        ] {
            assert_eq!(
                check_filter(filter, Some(Engine::Postgres)),
                Ok(()),
                "{filter}"
            );
        }
        for filter in ["`status` <> 'x'", "note = 'a\\' or 1=1'"] {
            assert_eq!(
                check_filter(filter, Some(Engine::Mysql)),
                Ok(()),
                "{filter}"
            );
        }
    }

    #[test]
    fn anything_but_one_whole_expression_is_refused_with_the_reason() {
        let cases: &[(&str, Engine, &str)] = &[
            ("1=1) or (1=1", Engine::Postgres, "but ')' follows '1 = 1'"),
            ("1=1) OR (1=1", Engine::Mysql, "but ')' follows"),
            (
                "(status = 'x'",
                Engine::Postgres,
                "is not one SQL expression",
            ),
            ("status = 'x'))", Engine::Postgres, "but ')' follows"),
            (
                "id > 1 ORDER BY id",
                Engine::Postgres,
                "but 'ORDER' follows",
            ),
            ("id > 1 LIMIT 5", Engine::Mysql, "but 'LIMIT' follows"),
            (
                "id > 1; DROP TABLE t",
                Engine::Postgres,
                "must not contain ';'",
            ),
            (
                "id > 1 -- hi",
                Engine::Postgres,
                "must not contain SQL comments",
            ),
            (
                "id > 1 /* x */",
                Engine::Postgres,
                "must not contain SQL comments",
            ),
            ("id > 1 # x", Engine::Mysql, "must not contain SQL comments"),
            ("id > 1 id < 5", Engine::Postgres, "but 'id' follows"),
            ("note = 'unterminated", Engine::Postgres, "is not valid SQL"),
            ("SELECT 1", Engine::Postgres, "but '1' follows 'SELECT'"),
        ];
        for (filter, engine, expected) in cases {
            let err = check_filter(filter, Some(*engine)).expect_err(filter);
            assert!(err.contains(expected), "{filter}: {err}");
        }
    }
}
