"""The station in French and English (issue #20 item 6): the catalogues are complete, the
templates hold no word outside them, each user reads the pages in their language, chosen with
``sqal station user add --lang`` or the switch on the page, and times are in the plant's zone.

A station runs in this process (no browser: the live script's words are checked in
``test_station_browser.py``).
"""

from __future__ import annotations

import html
import json
import re
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from app.cli import app as cli
from embedded import Mosquitto, Postgres
from sqal.wire import Decision, DefectCode, Grade, Kind, Recheck, RecheckAnswer
from station.pages import LIVE_KEYS
from station.words import (
    DECISION_WORDS_FR,
    DEFECT_WORDS,
    DEFECT_WORDS_FR,
    EN,
    FR,
    NBSP,
    translator,
)
from storage import station as db
from tests.fix_pg import new_database
from tests.station_kit import (
    PASSWORD,
    Http,
    RunningStation,
    config,
    result,
    running_station,
    station_db,
    store,
    tof,
)

LINE = "fr-L1"
ZONE = "Asia/Kolkata"
"""UTC+05:30 all year: a time shown in it differs from UTC and from the test machine's zone."""
TEMPLATES = Path(__file__).resolve().parents[1] / "station" / "templates"
SYMBOLS = {"SQAL", "g", "σ", "L", "a", "b"}
"""What a template may say outside ``t()``: the product's name, units and CIE L*a*b*."""
HELD_TS = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)


def _fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def test_every_english_key_has_a_french_translation_with_the_same_placeholders() -> None:
    assert set(FR) == set(EN)
    for key, en in EN.items():
        assert FR[key].strip(), key
        assert _fields(FR[key]) == _fields(en), key
    same = {k for k in EN if EN[k] == FR[k]}
    assert same <= {"lang.en", "lang.fr", "col.note", "quality.mass_sd"}, same
    assert set(DEFECT_WORDS_FR) == set(DEFECT_WORDS) == set(DefectCode)
    assert set(DECISION_WORDS_FR) == set(Decision)
    assert set(LIVE_KEYS) <= set(EN)


def test_french_has_its_typography() -> None:
    t = translator("fr")
    assert t("hold.recorded", sample="s1", answer="rejetée") == (
        f"Remise en contrôle de s1 enregistrée{NBSP}: rejetée."
    )
    assert t("quality.interval", rate="12,5", low="8,0", high="18,1") == (
        f"12,5{NBSP}% [8,0{NBSP}; 18,1]"
    )
    assert t("line.reject_rate") == "Taux de rejet"
    assert t("no.such.key") == "no.such.key"  # visible on the page, not an error
    assert translator("de")("nav.lines") == "Lines"  # a language without a catalogue: English


def _visible_literals(source: str) -> list[str]:
    """The words a template shows that do not come from an expression: the text between tags
    and the text of attributes a person reads."""
    text = re.sub(r"\{#.*?#\}", " ", source, flags=re.S)
    text = re.sub(r"<script\b.*?</script>", " ", text, flags=re.S)
    attrs = re.findall(r'(?:aria-label|title|placeholder|alt)="([^"]*)"', text)
    text = " ".join([text, *attrs])
    text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", " ", text, flags=re.S)
    text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    return [w for w in re.findall(r"[^\W\d_]+", text) if w not in SYMBOLS]


def test_templates_hold_no_untranslated_words() -> None:
    found = {p.name: _visible_literals(p.read_text()) for p in sorted(TEMPLATES.glob("*.html"))}
    assert len(found) >= 9
    assert {name: words for name, words in found.items() if words} == {}
    # the check sees a word outside t(), in the text and in a label
    assert _visible_literals('<p>{{ t("a") }} grade agrees</p>') == ["grade", "agrees"]
    assert _visible_literals('<table aria-label="Heights">') == ["Heights"]


@pytest.fixture(scope="module")
def dsn(pg: Postgres) -> Iterator[str]:
    with new_database(pg) as d:
        station_db(d)
        held = result("n1", "fr-hold", HELD_TS, Decision.HOLD, Grade.C, [DefectCode.UNDERFILL])
        answered = result("n1", "fr-done", HELD_TS - timedelta(minutes=1), Decision.HOLD)
        answer = Recheck(device_id="n1", sample_id="fr-done", ts=HELD_TS,
                         result_ts=answered.ts, answer=RecheckAnswer.REJECT,
                         decision=Decision.HOLD, mass_g=380.5, user="op")  # fmt: skip
        store(d, LINE, [(Kind.CONFIG, config("n1", HELD_TS - timedelta(hours=1))),
                        (Kind.TOF, tof("n1", "fr-hold", HELD_TS)), (Kind.RESULT, held),
                        (Kind.RESULT, answered), (Kind.RECHECK, answer)])  # fmt: skip
        yield d


@pytest.fixture(scope="module")
def station(broker: Mosquitto, dsn: str) -> Iterator[RunningStation]:
    with running_station(broker.url, dsn, tz=ZONE) as st:
        yield st


def _user(dsn: str, name: str, role: str, lang: str | None) -> str:
    args = ["station", "user", "add", name, "--role", role, "--db", dsn]
    out = CliRunner().invoke(cli, [*args, "--lang", lang] if lang else args,
                             env={"SQAL_STATION_PASSWORD": PASSWORD})  # fmt: skip
    assert out.exit_code == 0, out.output
    return str(out.output)


def test_user_add_sets_the_language_and_keeps_it_unless_told(dsn: str) -> None:
    assert _user(dsn, "marie", "quality", "fr") == "added marie (quality, fr)\n"
    assert _user(dsn, "marie", "operator", None) == "updated marie (operator, fr)\n"
    assert _user(dsn, "marie", "quality", None) == "updated marie (quality, fr)\n"
    out = CliRunner().invoke(cli, ["station", "user", "add", "x", "--role", "viewer",
                                   "--lang", "de", "--db", dsn])  # fmt: skip
    assert out.exit_code == 2
    assert "Invalid value for '--lang'" in out.output
    assert "'de' is not one of 'en', 'fr'." in out.output
    with db.session(dsn, "check") as conn, pytest.raises(Exception, match="station_users_lang"):
        conn.execute("UPDATE station_users SET language = 'de' WHERE name = 'marie'")


def test_every_page_in_french_with_times_in_the_plant_zone(
    station: RunningStation, dsn: str
) -> None:
    _user(dsn, "marie", "quality", "fr")
    http = Http(station.url)
    assert http.sign_in("marie") == 303
    local = HELD_TS.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M:%S")
    assert HELD_TS.strftime("%H:%M") not in local  # 5 h 30 ahead of UTC
    pages = {
        "/": ["Lignes", "Se déconnecter", "(qualité)", "File HOLD", "Qualité", "English"],
        f"/lines/{LINE}": ["Ligne fr-L1", "Taux de rejet", "Dernières barquettes", "Heure",
                           "pas à jour"],
        f"/hold?line={LINE}": ["File HOLD", "Remise en contrôle", "Accepter (expédier)",
                               "Masse mesurée, g (facultatif)", local,
                               "sous-remplissage (trop peu de produit dans la barquette)",
                               "Carte des hauteurs", "Dernières remises en contrôle", "rejetée",
                               "380,5 g", "HOLD (contrôler à la main)"],
        "/quality": ["Décisions face aux remises en contrôle", "jetées à la remise en contrôle",
                     f"{NBSP}:", "Rapport de poste", "Ouvrir le rapport", "Depuis"],
        f"/lines/{LINE}/trays/n1/fr-hold?ts={HELD_TS.isoformat().replace('+', '%2B')}": [
            "Masse estimée", "Probabilités", "P(rejet)", "Couleur"],
    }  # fmt: skip
    english = ["Sign out", "Last trays", "Re-check", "Reject rate", "Mass estimate", "ship",
               "too little product", "Open the report", "accepted"]  # fmt: skip
    for path, wanted in pages.items():
        status, body, _ = http.get(path)
        assert status == 200, (path, body[:300])
        shown = html.unescape(body)
        missing = [w for w in wanted if w not in shown]
        assert not missing, (path, missing)
        assert [w for w in english if w in shown] == [], path
        if not path.startswith("/lines/fr-L1/trays/"):  # a fragment, not a page
            assert '<html lang="fr">' in body
    _, body, _ = http.get(f"/lines/{LINE}")
    found = re.search(r'<script id="page" type="application/json">(.*?)</script>', body)
    assert found
    page = json.loads(found.group(1))
    assert (page["lang"], page["tz"]) == ("fr", ZONE)
    assert page["words"]["decisions"]["HOLD"] == "contrôler à la main"
    assert page["words"]["defects"]["underfill"].startswith("sous-remplissage")
    assert page["words"]["t"]["alarm.detail.dead_letters"] == (
        f"{{count}} messages inutilisables (dernier{NBSP}: {{reason}})"
    )


def test_the_switch_stores_the_language_for_the_user(station: RunningStation, dsn: str) -> None:
    _user(dsn, "paul", "operator", "en")
    http = Http(station.url)
    assert http.sign_in("paul") == 303
    status, body, _ = http.get("/hold")
    assert "Recent re-checks" in body
    csrf = http.csrf("/hold")
    assert http.post("/language", {"lang": "fr", "next": "/hold"})[0] == 403  # no CSRF token
    assert http.post("/language", {"csrf_token": csrf, "lang": "de", "next": "/"})[0] == 422
    status, _, headers = http.post("/language", {"csrf_token": csrf, "lang": "fr",
                                                 "next": "/hold"})  # fmt: skip
    assert (status, headers["location"]) == (303, "/hold")
    status, body, _ = http.get("/hold")
    assert "Dernières remises en contrôle" in html.unescape(body)
    with db.session(dsn, "read") as conn:
        user = db.get_user(conn, "paul")
    assert user is not None
    assert user.language == "fr"
    again = Http(station.url)  # the next session starts in French
    assert again.sign_in("paul") == 303
    status, body, _ = again.get("/quality")
    assert status == 403
    assert "Votre rôle (opérateur) ne permet pas cette action." in html.unescape(body)


def test_the_sign_in_page_follows_the_browser_before_anyone_signs_in(
    station: RunningStation,
) -> None:
    http = Http(station.url)
    _, body, _ = http.get("/login", headers={"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"})
    assert "Mot de passe" in body
    assert '<html lang="fr">' in body
    _, body, _ = http.get("/login", headers={"Accept-Language": "de-DE,en;q=0.5"})
    assert "Password" in body
