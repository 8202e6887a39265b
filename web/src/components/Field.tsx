import type { ComponentChildren } from 'preact';
import { useId } from 'preact/hooks';

/** A labelled input with its error beside it (announced, and tied to the input by aria-describedby). */
export function Field(props: {
  label: string;
  name: string;
  value: string;
  onInput: (value: string) => void;
  error?: string | undefined;
  hint?: ComponentChildren;
  type?: 'text' | 'email' | 'password' | 'search' | 'date' | 'number';
  required?: boolean;
  autocomplete?: string;
  multiline?: boolean;
  placeholder?: string;
  maxLength?: number;
  onBlur?: () => void;
}) {
  const id = useId();
  const errId = `${id}-err`;
  const hintId = `${id}-hint`;
  const describedBy = [props.hint ? hintId : '', props.error ? errId : ''].filter(Boolean).join(' ') || undefined;
  const common = {
    id,
    name: props.name,
    value: props.value,
    required: props.required,
    placeholder: props.placeholder,
    maxLength: props.maxLength,
    'aria-invalid': props.error ? true : undefined,
    'aria-describedby': describedBy,
    onInput: (e: Event) => props.onInput((e.currentTarget as HTMLInputElement).value),
    onBlur: props.onBlur,
  };
  return (
    <div class={props.error ? 'field invalid' : 'field'}>
      <label for={id}>{props.label}</label>
      {props.multiline ? <textarea rows={3} {...common} /> : <input type={(props.type ?? 'text') as 'text'} autocomplete={props.autocomplete as never} {...common} />}
      {props.hint && (
        <p class="hint" id={hintId}>
          {props.hint}
        </p>
      )}
      {props.error && (
        <p class="error" id={errId} role="alert">
          {props.error}
        </p>
      )}
    </div>
  );
}

/** A form-level message (errors not tied to one field). */
export function FormError(props: { message?: string | undefined }) {
  return props.message ? (
    <p class="form-error" role="alert">
      {props.message}
    </p>
  ) : null;
}
