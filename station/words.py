"""What the station says, in plain words: defect codes, decisions, alarms, and the pages' text,
in English and French (issue #20 item 6: the seed's users write French), chosen per user.

Templates call ``t(key, **values)``; every string a page shows goes through it, and
``tests/test_station_words.py`` fails when a template holds a word outside it or a French key is
missing. English is the fallback for a key a catalogue lacks (the page then shows English rather
than nothing). French follows the usual typography: a non-breaking space before ``:`` and
``%``, a comma as decimal mark (:func:`number`), the typographic apostrophe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum

from sqal.wire import Decision, DefectCode


class Language(StrEnum):
    """A language the station speaks (``station_users.language``, migration 0013)."""

    EN = "en"
    FR = "fr"


DEFECT_WORDS: Mapping[DefectCode, str] = {
    DefectCode.UNDERFILL: "too little product in the tray",
    DefectCode.OVERFILL: "too much product in the tray",
    DefectCode.SURFACE_IRREGULAR: "uneven surface",
    DefectCode.TILTED: "product tilted in the tray",
    DefectCode.ZONES_INVALID: "height sensor could not read most of the tray",
    DefectCode.OXIDATION: "browning (oxidised surface)",
    DefectCode.DISCOLORATION: "colour off",
    DefectCode.FAT_YELLOWING: "yellowing fat",
    DefectCode.SPECTRAL_SATURATED: "colour sensor overexposed",
    DefectCode.MISSING_TOF: "no height reading for this tray",
    DefectCode.MISSING_SPECTRAL: "no colour reading for this tray",
    DefectCode.MISSING_WEIGHT: "no checkweigher weight for this tray",
    DefectCode.LOW_CONFIDENCE: "the sensors are unsure",
    DefectCode.UNCALIBRATED: "colour sensor not calibrated",
}
"""Each defect code as an operator at the line would say it (docs/domain.md §2, §4, §5)."""

DEFECT_WORDS_FR: Mapping[DefectCode, str] = {
    DefectCode.UNDERFILL: "sous-remplissage (trop peu de produit dans la barquette)",
    DefectCode.OVERFILL: "sur-remplissage (trop de produit dans la barquette)",
    DefectCode.SURFACE_IRREGULAR: "surface irrégulière",
    DefectCode.TILTED: "produit de travers dans la barquette",
    DefectCode.ZONES_INVALID: "le capteur de hauteur n’a pas pu lire la plus grande partie de "
    "la barquette",
    DefectCode.OXIDATION: "brunissement (surface oxydée)",
    DefectCode.DISCOLORATION: "couleur anormale",
    DefectCode.FAT_YELLOWING: "graisse jaunie",
    DefectCode.SPECTRAL_SATURATED: "capteur de couleur surexposé",
    DefectCode.MISSING_TOF: "pas de mesure de hauteur pour cette barquette",
    DefectCode.MISSING_SPECTRAL: "pas de mesure de couleur pour cette barquette",
    DefectCode.MISSING_WEIGHT: "pas de pesée de la trieuse pondérale pour cette barquette",
    DefectCode.LOW_CONFIDENCE: "les capteurs sont incertains",
    DefectCode.UNCALIBRATED: "capteur de couleur non étalonné",
}

DECISION_WORDS: Mapping[Decision, str] = {
    Decision.PASS: "ship",
    Decision.HOLD: "re-check by hand",
    Decision.REJECT: "bin",
}

DECISION_WORDS_FR: Mapping[Decision, str] = {
    Decision.PASS: "expédier",
    Decision.HOLD: "contrôler à la main",
    Decision.REJECT: "jeter",
}

EN: Mapping[str, str] = {
    "app.title": "SQAL station",
    "nav.lines": "Lines",
    "nav.hold": "HOLD queue",
    "nav.quality": "Quality",
    "nav.logout": "Sign out",
    "nav.language": "Language",
    "lang.en": "English",
    "lang.fr": "Français",
    "role.viewer": "viewer",
    "role.operator": "operator",
    "role.quality": "quality",
    "login.title": "Sign in",
    "login.user": "User",
    "login.password": "Password",
    "login.submit": "Sign in",
    "login.failed": "Unknown user or wrong password.",
    "lines.title": "Lines",
    "lines.none": "No line has sent a result or a device status yet.",
    "line.title": "Line {line}",
    "line.trays": "Last trays",
    "line.devices": "Devices",
    "line.alarms": "Alarms",
    "line.no_alarms": "No alarm.",
    "line.selected": "Selected tray",
    "line.select_hint": "Click a tray to see its height map and colour.",
    "line.reject_rate": "Reject rate",
    "line.hold_rate": "HOLD rate",
    "line.limit": "limit {limit}",
    "line.window": "last {minutes} min, {n} trays",
    "live.live": "live",
    "live.stale": "stale",
    "live.broker_down": "no connection to the broker",
    "live.no_data": "no result for {seconds} s",
    "live.station_down": "no connection to the station",
    "live.db_down": "database unreachable: history and re-checks unavailable",
    "col.time": "Time",
    "col.device": "Device",
    "col.sample": "Tray",
    "col.grade": "Grade",
    "col.decision": "Decision",
    "col.reasons": "Reasons",
    "col.state": "State",
    "col.last_seen": "Last seen",
    "col.mass": "Mass",
    "col.line": "Line",
    "col.answer": "Answer",
    "col.user": "By",
    "col.note": "Note",
    "device.online": "online",
    "device.offline": "offline",
    "device.unknown": "no status",
    "decision.none": "no decision (older analyzer)",
    "alarm.device_offline": "Device {subject} offline",
    "alarm.reject_rate": "Reject rate above the line's limit",
    "alarm.dead_letters": "Unusable messages arriving",
    "alarm.detail.device_offline": "{device} went offline",
    "alarm.detail.reject_rate": "{rate} of the last {n} trays rejected (limit {limit})",
    "alarm.detail.dead_letters": "{count} unusable messages (last: {reason})",
    "alarm.ack": "Acknowledge",
    "alarm.acked": "acknowledged by {user}",
    "alarm.cleared": "cleared",
    "evidence.heights": "Height map (mm above the tray base)",
    "evidence.no_frame": "The tray's height frame is not stored (yet).",
    "evidence.colour": "Colour",
    "evidence.no_colour": "No colour reading.",
    "evidence.mass": "Mass estimate",
    "evidence.weighed": "weighed {mass} g",
    "evidence.p_defects": "Probabilities",
    "evidence.p_reject": "P(reject)",
    "hold.title": "HOLD queue",
    "hold.none": "No tray is waiting for a re-check.",
    "hold.answer": "Re-check",
    "hold.accept": "Accept (ship)",
    "hold.reject": "Reject (bin)",
    "hold.mass": "Measured mass, g (optional)",
    "hold.note": "Note (optional)",
    "hold.submit": "Record",
    "hold.recorded": "Re-check of {sample} recorded: {answer}.",
    "hold.recent": "Recent re-checks",
    "answer.accept": "accept",
    "answer.reject": "reject",
    "quality.title": "Quality",
    "quality.rechecks": "Verdicts against the operators' re-checks (last {days} days)",
    "quality.no_rechecks": "No re-check recorded yet.",
    "quality.accepted": "accepted",
    "quality.rejected": "rejected",
    "quality.binned": "binned on re-check (Wilson 95 %)",
    "quality.interval": "{rate} % [{low}, {high}]",
    "quality.agreement": "Grade agrees with the re-check (REJECT ⇔ rejected): {value} of {n}",
    "quality.mass_bias": "Published mass − measured: mean {bias} g",
    "quality.mass_sd": ", σ {sd} g",
    "quality.mass_n": " ({n} trays)",
    "quality.report": "Shift report",
    "quality.report_make": "Open the report",
    "quality.since": "From",
    "quality.until": "To",
    "error.forbidden": "Your role ({role}) may not do this.",
    "error.csrf": "The form expired or did not come from this page; reload it and try again.",
    "error.db": "The database is unreachable; nothing was recorded. Try again shortly.",
    "error.storage": "Database unreachable: {detail}",
    "error.not_found": "Not found.",
    "error.no_line": "No line {line}.",
    "error.no_alarm": "No open alarm {id} (acknowledged already?).",
    "error.no_result": "No result {key} at {ts}.",
    "error.sign_in": "Sign in first.",
    "error.internal": "Internal error (logged); the station goes on.",
}

FR: Mapping[str, str] = {
    "app.title": "Station SQAL",
    "nav.lines": "Lignes",
    "nav.hold": "File HOLD",
    "nav.quality": "Qualité",
    "nav.logout": "Se déconnecter",
    "nav.language": "Langue",
    "lang.en": "English",
    "lang.fr": "Français",
    "role.viewer": "lecteur",
    "role.operator": "opérateur",
    "role.quality": "qualité",
    "login.title": "Connexion",
    "login.user": "Utilisateur",
    "login.password": "Mot de passe",
    "login.submit": "Se connecter",
    "login.failed": "Utilisateur inconnu ou mot de passe erroné.",
    "lines.title": "Lignes",
    "lines.none": "Aucune ligne n’a encore envoyé de résultat ni d’état d’appareil.",
    "line.title": "Ligne {line}",
    "line.trays": "Dernières barquettes",
    "line.devices": "Appareils",
    "line.alarms": "Alarmes",
    "line.no_alarms": "Aucune alarme.",
    "line.selected": "Barquette sélectionnée",
    "line.select_hint": "Cliquez sur une barquette pour voir sa carte des hauteurs et sa couleur.",
    "line.reject_rate": "Taux de rejet",
    "line.hold_rate": "Taux de HOLD",
    "line.limit": "limite {limit}",
    "line.window": "{minutes} dernières minutes, {n} barquettes",
    "live.live": "en direct",
    "live.stale": "pas à jour",
    "live.broker_down": "pas de connexion au broker",
    "live.no_data": "aucun résultat depuis {seconds} s",
    "live.station_down": "pas de connexion à la station",
    "live.db_down": "base de données injoignable : historique et remises en contrôle indisponibles",
    "col.time": "Heure",
    "col.device": "Appareil",
    "col.sample": "Barquette",
    "col.grade": "Classe",
    "col.decision": "Décision",
    "col.reasons": "Motifs",
    "col.state": "État",
    "col.last_seen": "Dernier contact",
    "col.mass": "Masse",
    "col.line": "Ligne",
    "col.answer": "Réponse",
    "col.user": "Par",
    "col.note": "Note",
    "device.online": "en ligne",
    "device.offline": "hors ligne",
    "device.unknown": "pas d’état",
    "decision.none": "pas de décision (analyseur ancien)",
    "alarm.device_offline": "Appareil {subject} hors ligne",
    "alarm.reject_rate": "Taux de rejet au-dessus de la limite de la ligne",
    "alarm.dead_letters": "Messages inutilisables reçus",
    "alarm.detail.device_offline": "{device} s’est déconnecté",
    "alarm.detail.reject_rate": "{rate} des {n} dernières barquettes rejetées (limite {limit})",
    "alarm.detail.dead_letters": "{count} messages inutilisables (dernier : {reason})",
    "alarm.ack": "Acquitter",
    "alarm.acked": "acquittée par {user}",
    "alarm.cleared": "terminée",
    "evidence.heights": "Carte des hauteurs (mm au-dessus du fond de la barquette)",
    "evidence.no_frame": "La mesure de hauteur de la barquette n’est pas (encore) enregistrée.",
    "evidence.colour": "Couleur",
    "evidence.no_colour": "Pas de mesure de couleur.",
    "evidence.mass": "Masse estimée",
    "evidence.weighed": "pesée {mass} g",
    "evidence.p_defects": "Probabilités",
    "evidence.p_reject": "P(rejet)",
    "hold.title": "File HOLD",
    "hold.none": "Aucune barquette n’attend de remise en contrôle.",
    "hold.answer": "Remise en contrôle",
    "hold.accept": "Accepter (expédier)",
    "hold.reject": "Rejeter (jeter)",
    "hold.mass": "Masse mesurée, g (facultatif)",
    "hold.note": "Note (facultatif)",
    "hold.submit": "Enregistrer",
    "hold.recorded": "Remise en contrôle de {sample} enregistrée : {answer}.",
    "hold.recent": "Dernières remises en contrôle",
    "answer.accept": "acceptée",
    "answer.reject": "rejetée",
    "quality.title": "Qualité",
    "quality.rechecks": "Décisions face aux remises en contrôle des opérateurs "
    "({days} derniers jours)",
    "quality.no_rechecks": "Aucune remise en contrôle enregistrée pour l’instant.",
    "quality.accepted": "acceptées",
    "quality.rejected": "rejetées",
    "quality.binned": "jetées à la remise en contrôle (Wilson 95 %)",
    "quality.interval": "{rate} % [{low} ; {high}]",
    "quality.agreement": "La classe concorde avec la remise en contrôle (REJECT ⇔ rejetée) : "
    "{value} sur {n}",
    "quality.mass_bias": "Masse publiée − mesurée : moyenne {bias} g",
    "quality.mass_sd": ", σ {sd} g",
    "quality.mass_n": " ({n} barquettes)",
    "quality.report": "Rapport de poste",
    "quality.report_make": "Ouvrir le rapport",
    "quality.since": "Depuis",
    "quality.until": "Jusqu’à",
    "error.forbidden": "Votre rôle ({role}) ne permet pas cette action.",
    "error.csrf": "Le formulaire a expiré ou ne vient pas de cette page ; rechargez-la et "
    "réessayez.",
    "error.db": "La base de données est injoignable ; rien n’a été enregistré. Réessayez dans "
    "un instant.",
    "error.storage": "Base de données injoignable : {detail}",
    "error.not_found": "Introuvable.",
    "error.no_line": "Pas de ligne {line}.",
    "error.no_alarm": "Pas d’alarme ouverte {id} (déjà acquittée ?).",
    "error.no_result": "Pas de résultat {key} à {ts}.",
    "error.sign_in": "Connectez-vous d’abord.",
    "error.internal": "Erreur interne (journalisée) ; la station continue.",
}

NBSP = "\u00a0"
_FRENCH_SPACES = {" :": NBSP + ":", " ;": NBSP + ";", " ?": NBSP + "?", " %": NBSP + "%"}


def _french(text: str) -> str:
    """French typography: a non-breaking space before ``: ; ? %`` (never a line break there)."""
    for plain, tied in _FRENCH_SPACES.items():
        text = text.replace(plain, tied)
    return text


CATALOGUES: Mapping[str, Mapping[str, str]] = {
    Language.EN: EN,
    Language.FR: {k: _french(v) for k, v in FR.items()},
}
LANGUAGES = tuple(CATALOGUES)
_DEFECTS: Mapping[str, Mapping[DefectCode, str]] = {
    Language.EN: DEFECT_WORDS,
    Language.FR: DEFECT_WORDS_FR,
}
_DECISIONS: Mapping[str, Mapping[Decision, str]] = {
    Language.EN: DECISION_WORDS,
    Language.FR: DECISION_WORDS_FR,
}


def translator(language: str) -> Callable[..., str]:
    """``t(key, **values)`` in ``language`` (English for a key or language it lacks).

    An unknown key is shown as itself, so a missing string is visible on the page, not an error.
    """
    table = CATALOGUES.get(language, EN)

    def t(key: str, **values: object) -> str:
        text = table.get(key) or EN.get(key) or key
        return text.format(**values) if values else text

    return t


def number(language: str) -> Callable[[str, float], str]:
    """``n(fmt, x)``: ``fmt % x`` with the language's decimal mark (``12,5 %`` in French)."""

    def n(fmt: str, x: float) -> str:
        text = fmt % x
        return _french(text.replace(".", ",")) if language == Language.FR else text

    return n


def defect_words(codes: list[str], language: str = Language.EN) -> list[str]:
    """Plain words for defect codes (a code this build does not know is shown as is)."""
    words = _DEFECTS.get(language, DEFECT_WORDS)
    out = []
    for code in codes:
        try:
            out.append(words[DefectCode(code)])
        except ValueError:
            out.append(code.replace("_", " "))
    return out


def decision_words(decision: str | None, language: str = Language.EN) -> str:
    if decision is None:
        return translator(language)("decision.none")
    try:
        return _DECISIONS.get(language, DECISION_WORDS)[Decision(decision)]
    except ValueError:
        return decision


def page_words(language: str) -> dict[str, dict[str, str]]:
    """The defect and decision words of ``language`` by code, for the live script."""
    defects = _DEFECTS.get(language, DEFECT_WORDS)
    decisions = _DECISIONS.get(language, DECISION_WORDS)
    return {
        "defects": {c.value: w for c, w in defects.items()},
        "decisions": {d.value: w for d, w in decisions.items()},
    }
