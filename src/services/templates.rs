//! Email templates (§7): definitions with validation, previews, and rendering for the services
//! that send mail (the magic-code override, audience confirmations).

use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::taxonomy::valid_key;
use crate::domain::{Email, Name, Status, double_option};
use crate::error::{AppError, AppResult, FieldError};
use crate::mail::render::{self, Rendered, TemplateSource};
use crate::mail::{OutgoingMail, address_key, mailbox_display};
use crate::repo::{Database, StoreRow, TemplateRow, Tx};
use crate::services::retrying;

/// The key of the template that replaces the built-in magic-code mail.
pub const PROFILE_CODE_KEY: &str = "profile_code";

/// RFC 5322's limit for one header line.
const MAX_SUBJECT_CHARS: usize = 998;

/// `{{ name }}` placeholders (minijinja syntax). A template that does not compile is refused
/// with 422 naming the part. Key `profile_code` replaces the built-in sign-in code mail
/// (variables `code`, `store_name`, `email`, `expires_minutes`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    /// 1–64 of `[A-Za-z0-9_-]`, unique per store.
    pub key: String,
    /// At most 998 characters.
    pub subject: String,
    pub body: String,
    pub text_body: Option<String>,
    /// At most 200 characters.
    pub from_name: Option<String>,
    pub from_email: Option<String>,
    pub reply_to: Option<String>,
    pub preheader: Option<String>,
    /// `active` (default) or `archived`.
    pub status: Option<Status>,
}

/// Absent fields stay; `null` clears an optional field.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTemplate {
    pub key: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub text_body: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub from_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub from_email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub reply_to: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub preheader: Option<Option<String>>,
    pub status: Option<Status>,
}

pub struct Templates {
    db: Database,
    public_base_url: String,
}

pub fn source(row: &TemplateRow) -> TemplateSource {
    TemplateSource {
        subject: row.subject.clone(),
        body: row.body.clone(),
        text_body: row.text_body.clone(),
        preheader: row.preheader.clone(),
    }
}

/// The sign-in code mail from the store's active `profile_code` template, sent from its sender
/// when it names one; `builtin` when there is no such template or it fails to render (a broken
/// template must not lock shoppers out).
pub fn profile_code_mail(
    store: &StoreRow,
    template: Option<TemplateRow>,
    builtin: OutgoingMail,
    code: &str,
    minutes: u64,
) -> OutgoingMail {
    let Some(template) = template.filter(|t| t.status == Status::Active) else { return builtin };
    let vars = json!({"code": code, "store_name": store.name, "email": builtin.to, "expires_minutes": minutes});
    let rendered = match render::render(&source(&template), &vars) {
        Ok(rendered) => rendered,
        Err(e) => {
            tracing::warn!(store_id = %store.id, template_id = %template.id, error = %e,
                "the profile_code template failed to render: the built-in code mail is sent instead");
            return builtin;
        }
    };
    let from = if template.from_email.is_none() && template.from_name.is_none() {
        builtin.from
    } else {
        let name = template.from_name.as_deref().or(store.from_name.as_deref()).unwrap_or(&store.name);
        let email =
            template.from_email.or_else(|| store.from_email.clone()).unwrap_or_else(|| address_key(&builtin.from));
        mailbox_display(name, &email)
    };
    OutgoingMail {
        message_id: None,
        from,
        to: builtin.to,
        reply_to: template.reply_to,
        subject: rendered.subject,
        html: rendered.html,
        text: rendered.text,
        headers: vec![],
    }
}

/// By id, or by key when the path segment is not a UUID (or no template has it as id); locked
/// inside a transaction.
async fn find(tx: &mut Tx, store_id: Uuid, id_or_key: &str) -> AppResult<TemplateRow> {
    let id = Uuid::parse_str(id_or_key).ok();
    tx.lock_template(store_id, id, id_or_key).await?.ok_or(AppError::NotFound("email template"))
}

/// Blank optional text counts as absent: forms send `""` for an empty field.
fn blank_to_none(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

fn check_email(field: &str, value: &mut Option<String>, errors: &mut Vec<FieldError>) {
    if let Some(raw) = value.as_deref() {
        match Email::parse(raw) {
            Ok(email) => *value = Some(email.as_str().to_string()),
            Err(e) => errors.push(FieldError::new(field, e)),
        }
    }
}

/// Normalises the row in place and returns everything wrong with it, naming the fields.
fn validate(row: &mut TemplateRow) -> AppResult<()> {
    let mut errors = vec![];
    if !valid_key(&row.key) {
        errors.push(FieldError::new("key", "invalid_key"));
    }
    if row.subject.trim().is_empty() {
        errors.push(FieldError::new("subject", "required"));
    } else if row.subject.chars().count() > MAX_SUBJECT_CHARS {
        errors.push(FieldError::new("subject", "too_long"));
    }
    if row.body.trim().is_empty() {
        errors.push(FieldError::new("body", "required"));
    }
    row.text_body = blank_to_none(row.text_body.take());
    row.preheader = blank_to_none(row.preheader.take());
    row.from_name = blank_to_none(row.from_name.take());
    if let Some(name) = row.from_name.as_deref() {
        match Name::parse(name) {
            Ok(name) => row.from_name = Some(name.into_inner()),
            Err(e) => errors.push(FieldError::new("from_name", e)),
        }
    }
    row.from_email = blank_to_none(row.from_email.take());
    check_email("from_email", &mut row.from_email, &mut errors);
    row.reply_to = blank_to_none(row.reply_to.take());
    check_email("reply_to", &mut row.reply_to, &mut errors);
    let mut message = errors.iter().map(|e| format!("{}: {}", e.field, e.error)).collect::<Vec<_>>();
    if let Err(e) = render::check(&source(row)) {
        errors.push(FieldError::new(e.part, "invalid_template"));
        message.push(format!("{}: invalid_template ({})", e.part, e.message));
    }
    if errors.is_empty() { Ok(()) } else { Err(AppError::Validation { message: message.join(", "), errors }) }
}

impl Templates {
    pub fn new(db: Database, public_base_url: String) -> Self {
        Self { db, public_base_url }
    }

    pub async fn create(&self, store_id: Uuid, input: CreateTemplate) -> AppResult<TemplateRow> {
        let now = crate::now();
        let mut row = TemplateRow {
            store_id,
            id: Uuid::now_v7(),
            key: input.key,
            subject: input.subject,
            body: input.body,
            text_body: input.text_body,
            from_name: input.from_name,
            from_email: input.from_email,
            reply_to: input.reply_to,
            preheader: input.preheader,
            status: input.status.unwrap_or(Status::Active),
            created_at: now,
            updated_at: now,
        };
        validate(&mut row)?;
        self.db.auto().insert_template(&row).await?;
        Ok(row)
    }

    /// By id, or by key when the path segment is not a UUID (or no template has it as id).
    pub async fn get(&self, store_id: Uuid, id_or_key: &str) -> AppResult<TemplateRow> {
        find(&mut self.db.auto(), store_id, id_or_key).await
    }

    pub async fn list(&self, store_id: Uuid, after: Option<Uuid>, limit: u32) -> AppResult<Vec<TemplateRow>> {
        Ok(self.db.auto().templates(store_id, after, limit).await?)
    }

    pub async fn update(&self, store_id: Uuid, id_or_key: &str, patch: UpdateTemplate) -> AppResult<TemplateRow> {
        let mut tx = self.db.begin().await?;
        let mut row = find(&mut tx, store_id, id_or_key).await?;
        let UpdateTemplate { key, subject, body, text_body, from_name, from_email, reply_to, preheader, status } =
            patch;
        row.key = key.unwrap_or(row.key);
        row.subject = subject.unwrap_or(row.subject);
        row.body = body.unwrap_or(row.body);
        row.text_body = text_body.unwrap_or(row.text_body);
        row.from_name = from_name.unwrap_or(row.from_name);
        row.from_email = from_email.unwrap_or(row.from_email);
        row.reply_to = reply_to.unwrap_or(row.reply_to);
        row.preheader = preheader.unwrap_or(row.preheader);
        row.status = status.unwrap_or(row.status);
        row.updated_at = crate::now();
        validate(&mut row)?;
        tx.update_template(&row).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Audiences that confirmed through this template become single opt-in, in the same transaction.
    pub async fn delete(&self, store_id: Uuid, id_or_key: &str) -> AppResult<()> {
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            // Locked first: an audience being pointed at it meanwhile waits, then finds it gone.
            let row = find(&mut tx, store_id, id_or_key).await?;
            tx.clear_confirm_template(store_id, row.id, crate::now()).await?;
            tx.delete_template(store_id, row.id).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Renders any template of the store, archived ones too, with the given variables over sample
    /// values of the variables its mail kind gets at send time (the sign-in code mail for
    /// `profile_code`, a double opt-in confirmation otherwise), so that only variables nothing
    /// will ever fill are warned about.
    pub async fn preview(&self, store_id: Uuid, id_or_key: &str, vars: &Value) -> AppResult<Rendered> {
        let mut db = self.db.auto();
        let row = find(&mut db, store_id, id_or_key).await?;
        let store = db.store(store_id).await?.ok_or(AppError::NotFound("store"))?;
        let mut merged = self.send_time_samples(&row, &store);
        if let (Some(merged), Some(given)) = (merged.as_object_mut(), vars.as_object()) {
            merged.extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let vars = if vars.is_object() || vars.is_null() { &merged } else { vars };
        render::render(&source(&row), vars).map_err(|e| AppError::Validation {
            message: format!("{}: render_failed ({})", e.part, e.message),
            errors: vec![FieldError::new(e.part, "render_failed")],
        })
    }

    fn send_time_samples(&self, row: &TemplateRow, store: &StoreRow) -> Value {
        let email = "ann@example.com";
        if row.key == PROFILE_CODE_KEY {
            return json!({"code": "123456", "store_name": store.name, "email": email, "expires_minutes": 10});
        }
        let base = format!("{}/v1/stores/{}/audiences", self.public_base_url, store.id);
        json!({
            "confirm_url": format!("{base}/confirm?token=sample-token"),
            "unsubscribe_url": format!("{base}/unsubscribe?token=sample-token"),
            "email": email,
            "audience_name": "Newsletter",
            "audience_key": "newsletter",
            "store_name": store.name,
        })
    }
}
