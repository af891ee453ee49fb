"""The question bank and practice: questions, quizzes, spaced repetition, mock interviews.
Data beside the code: bank/ (one markdown file per question), coverage/, curated.yaml. Modules:

    models           Question, Choice, Quiz, Attempt, Answer, PracticeCard, Review, JudgeCall, Interview
    vocab            the bank's fixed vocabularies (kinds, difficulties, topics, statuses)
    bank             the question bank as files: markdown with YAML front matter <-> fields
    access           one access helper per owned object, for views and sockets
    selectors        read-only queries: what pages and exports show
    services         work that writes, one module per area (package; see its docstring)
    grading          grading rules for choice and numeric answers, grade -> FSRS rating (pure)
    judge            the LLM judge for open answers (any OpenAI-compatible server)
    views            thin pages: practice, quizzes, progress
    interview_views  thin pages of the mock interview
    forms            quiz and interview forms
    admin            curator tools: edit, review, publish; every save is a QuestionRevision
    urls             /quiz/
    templatetags     quiz_tags
    management       load_bank, export_bank
    apps             the app config
"""
